"""The evaluate stage's procedures: real-set I3D statistics, FVD / R-FVD / FVD*, and the models' reports
(videogpt.reports) on the FVD trials' real subsets, gathered into metrics/eval.json.

Every number is written beside its protocol (the named FVD protocol in full, eval.fvd_protocol, with which
clips and windows, frames, resolution and the weights' sha256) and what published numbers it is comparable
with, because FVD from different protocols is not comparable. Without I3D weights
the FVD entries are null with the reason; nothing else stands in for them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import EvalParams, Params, ParamsError
from videogpt.data.clip_store import clips_array, read_clips_at, store_location
from videogpt.distributed import inference_autocast, inference_device, to_device, worker_device
from videogpt.engine import ordered_map
from videogpt.fileio import atomic_path, cache_dir, file_sha256, write_json
from videogpt.generate import GeneratedSets, read_samples
from videogpt.metrics.classifier import classify, inception_score, label_accuracy, load_classifier
from videogpt.metrics.frechet import FeatureSums, frechet_distance, gaussian_stats, load_stats, save_stats
from videogpt.metrics.i3d import i3d_features, load_feature_network
from videogpt.metrics.protocol import (MIN_FRAMES, WINDOW_FRAMES, FVDProtocol, fvd_protocol, generated_to_uint8,
                                       real_to_uint8)
from videogpt.reports import bits_per_dim, bits_protocol, clip_mse, recon_protocol, recon_scores
from videogpt.metrics.trials import real_subsets, trial_summary, window_offsets
from videogpt.tokens import open_token_store, prior_dataset
from videogpt.video import to_float, to_uint8

INDICES_FILE, PROTOCOL_FILE = "indices.json", "protocol.json"


# --------------------------------------------------------------------------------------------
# FVD and the evaluate stage
#
# The named protocol (eval.fvd_protocol, videogpt.metrics.protocol.FVDProtocol) with eval.n_real /
# eval.n_generated applied decides everything: trial t compares n_real real clips of the protocol's split
# (its subset rule, one window per clip by its window rule) with n_generated generated videos; generated
# video t * n_generated + j was conditioned on test clip generated[t][j] (the trial's real clip j mod n_real
# when the real clips are test clips, else test clip j mod n_test). The fvd_real_stats stage draws subsets,
# windows and conditioning clips, writes them to indices.json beside the real statistics (one .npz per
# trial) and keys those by them; the sample stage generates for exactly those clips; evaluate checks both
# before any I3D work.


def eval_protocol(ep: EvalParams) -> FVDProtocol:
    """The run's FVD protocol: eval.fvd_protocol with eval.n_real / eval.n_generated applied."""
    return fvd_protocol(ep.fvd_protocol, ep.n_real, ep.n_generated)


def draw_real_sets(ep: EvalParams, clips_path) -> dict:
    """indices.json's content: the trials' real subsets, each real clip's window offset, and the test clip each
    generated video is conditioned on. A split smaller than the protocol's n_real is an error naming the keys,
    raised before any work."""
    proto = eval_protocol(ep)
    n_src, clip_frames, resolution = clips_array(clips_path, proto.real_split).shape[:3]
    if proto.n_real > n_src:
        raise ParamsError(f"eval.n_real: {proto.n_real} (eval.fvd_protocol={proto.name}) exceeds the {n_src} clips of "
                          f"the {proto.real_split} split in {clips_path}; each of the eval.n_trials={ep.n_trials} "
                          "trials needs eval.n_real distinct real clips: lower eval.n_real or add clips")
    trials = real_subsets(n_src, proto.n_real, ep.n_trials, ep.seed, proto.real_subset)
    # one window per clip of the split (seeded once): a clip has the same window in every trial
    table = window_offsets(n_src, clip_frames, WINDOW_FRAMES, ep.seed, proto.window)
    n_test = clips_array(clips_path, "test").shape[0]
    cond = [np.resize(t if proto.real_split == "test" else np.arange(n_test), proto.n_generated) for t in trials]
    return {"split": proto.real_split, "n_source": int(n_src), "seed": ep.seed, "fvd_protocol": proto.name,
            "n_real": proto.n_real, "n_generated": proto.n_generated, "n_trials": ep.n_trials,
            "resolution": int(resolution), "clip_frames": int(clip_frames), "window_frames": int(min(WINDOW_FRAMES, clip_frames)),
            "trials": [t.tolist() for t in trials], "offsets": [table[t].tolist() for t in trials],
            "generated": [c.tolist() for c in cond]}


def read_real_sets(stats_dir) -> dict:
    """indices.json as the fvd_real_stats stage drew it (see `draw_real_sets`)."""
    path = Path(stats_dir) / INDICES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no real-subset indices; run the fvd_real_stats stage first (dvc repro)")
    return json.loads(path.read_text())


def _trials(sets: dict) -> list[np.ndarray]:
    return [np.asarray(t, np.int64) for t in sets["trials"]]


def real_protocol(params: Params, sets: dict) -> dict:
    """What defines the real-set statistics (the named protocol in full, weights, which clips and windows);
    the cache is valid only for an identical protocol."""
    ep = params.eval
    proto = eval_protocol(ep)
    weights = ep.i3d_weights
    chosen = json.dumps([sets["trials"], sets["offsets"]], separators=(",", ":"))
    deviations = []
    if sets["clip_frames"] < WINDOW_FRAMES:
        deviations.append(f"the stored clips have {sets['clip_frames']} frames, fewer than the protocol's "
                          f"{WINDOW_FRAMES}")
    return {**proto.record(deviations), "weights": weights,
            "weights_sha256": file_sha256(weights) if weights and Path(weights).is_file() else None,
            "split": sets["split"], "n_source": sets["n_source"], "n_trials": len(sets["trials"]),
            "selection": _SELECTION[proto.real_subset], "seed": ep.seed,
            "windows": (f"a {sets['window_frames']}-frame window per real clip: "
                        + (f"a seeded random offset in 0..{sets['clip_frames'] - sets['window_frames']}"
                           if proto.window == "random" and sets["clip_frames"] > WINDOW_FRAMES else
                           f"frames 0..{sets['window_frames'] - 1} (the stored clips are {sets['clip_frames']} "
                           "frames: no longer source to draw a window from)" if proto.window == "random" else
                           f"frames 0..{sets['window_frames'] - 1}")),
            "indices_sha256": hashlib.sha256(chosen.encode()).hexdigest(),
            "frames": sets["window_frames"], "resolution": sets["resolution"],
            **({"precision": ep.precision} if ep.precision != "32" else {})}  # bf16 features: other statistics


_SELECTION = {"per_trial": "per trial, a uniform random sample without replacement of the split, seeded with "
                           "(eval.seed, trial)",
              "fixed": "one uniform random sample without replacement of the split, seeded with (eval.seed, 0), "
                       "the same in every trial",
              "first_n": "the first n_real clips of the split in store order, the same in every trial"}


def fvd_unavailable_reason(params: Params, protocol: dict) -> str | None:
    """Why FVD cannot be computed here (no weights, too few frames), or None."""
    w = params.eval.i3d_weights
    if w is None:
        return ("no I3D weights: eval.i3d_weights is null (fetch them with `python -m videogpt.download i3d` "
                "and set the path)")
    if not Path(w).is_file():
        return f"no I3D weights: eval.i3d_weights file '{w}' does not exist"
    if protocol["frames"] < MIN_FRAMES:
        return (f"clips have {protocol['frames']} frames (data.sequence_length); the I3D network needs at least "
                f"{MIN_FRAMES}")
    return None


def _windows(videos: np.ndarray, offsets: np.ndarray, frames: int) -> np.ndarray:
    """(N, T, H, W, 3) -> (N, frames, H, W, 3): video i from frame offsets[i] on."""
    return np.stack([v[o:o + frames] for v, o in zip(videos, offsets)]) if len(videos) else videos[:, :frames]


def _stats_file(trial: int) -> str:
    return f"stats_trial{trial:03d}.npz"


def _rows_of(union: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Positions of a trial's clip indices in the sorted union of all trials' indices."""
    return np.searchsorted(union, subset)


def _load_model(ep: EvalParams, flavour: str, device):
    return load_feature_network(ep.i3d_weights, flavour, allow_torchscript=ep.allow_i3d_torchscript).to(device)


PART_CLIPS = 256  # clips (videos) per unit of I3D work: a fixed partition, so the statistics' bytes do not
                  # depend on the engine or the number of workers


class _I3D:
    """The I3D of eval.i3d_weights for one flavour, loaded on first use: a part function holding it is pickled
    to Ray workers with the path, not the network (a TorchScript one cannot be pickled). The path is made
    absolute: on a cluster it must be readable from the workers (a shared filesystem)."""

    def __init__(self, ep: EvalParams, flavour: str):
        self.ep = dataclasses.replace(ep, i3d_weights=str(Path(ep.i3d_weights).resolve()))
        self.flavour, self.model = flavour, None

    def __call__(self):
        if self.model is None:
            self.model = _load_model(self.ep, self.flavour, torch.device("cpu"))
        return self.model

    def __getstate__(self):
        return {**self.__dict__, "model": None}


class _RealFeatureSums:
    """(start, stop) -> [FeatureSums of the I3D features of trial t's clips among union[start:stop], per trial]:
    one part of the real-set statistics, computed here or on a Ray worker, which then picks its own device
    (device None). membership: (n_trials, len(union)) bool, clip in trial."""

    def __init__(self, i3d: _I3D, clips: str, split: str, union: np.ndarray, offsets: np.ndarray,
                 frames: int, membership: np.ndarray, batch_size: int, precision: str, device):
        self.i3d, self.flavour, self.clips, self.split = i3d, i3d.flavour, clips, split
        self.union, self.offsets = union, offsets
        self.frames, self.membership, self.batch_size, self.precision = frames, membership, batch_size, precision
        self.device = device

    def __call__(self, part: tuple[int, int]) -> list[FeatureSums]:
        a, b = part
        device = worker_device(self.device)
        clips = read_clips_at(self.clips, self.split, self.union[a:b])
        videos = real_to_uint8(_windows(clips, self.offsets[a:b], self.frames), self.flavour)
        feats = i3d_features(self.i3d(), videos, batch_size=self.batch_size, device=device,
                             precision=self.precision)
        return [FeatureSums.of(feats[in_trial[a:b]]) for in_trial in self.membership]


class _GeneratedFeatureSums:
    """(start, tokens (n, t, h, w)) -> [FeatureSums of the I3D features of the generated videos among start..
    start + n of trial t, per trial]: the videos decoded by the VQ-VAE, their first `frames` frames (as long as
    the real windows). Generated video i belongs to trial i // n_generated. Runs here or on a Ray worker (the
    VQ-VAE pickled with it, on the CPU), which then picks its own device (device None)."""

    def __init__(self, vqvae, i3d: _I3D, frames: int, n_generated: int, n_trials: int, batch_size: int,
                 precision: str, device):
        self.vqvae, self.i3d, self.flavour, self.frames = vqvae, i3d, i3d.flavour, frames
        self.n_generated, self.n_trials, self.batch_size, self.precision = n_generated, n_trials, batch_size, precision
        self.device = device

    @torch.inference_mode()
    def __call__(self, part: tuple[int, np.ndarray]) -> list[FeatureSums]:
        start, tokens = part
        device = worker_device(self.device)
        vqvae, feats = self.vqvae.to(device), []
        for a in range(0, len(tokens), self.batch_size):
            videos = vqvae.decode(to_device(torch.as_tensor(tokens[a:a + self.batch_size], dtype=torch.long),
                                            device)).cpu()
            feats.append(i3d_features(self.i3d(), generated_to_uint8(videos, self.flavour)[:, :self.frames],
                                      batch_size=self.batch_size, device=device, precision=self.precision))
        feats = np.concatenate(feats)
        trial = (start + np.arange(len(tokens))) // self.n_generated
        return [FeatureSums.of(feats[trial == t]) for t in range(self.n_trials)]


def _trial_sums(part_sums, parts, compute) -> list[FeatureSums]:
    """The per-trial FeatureSums of every part (part_sums over parts, on compute's engine), added in part order:
    the same bytes whatever the engine and the number of workers."""
    total = None
    for sums in ordered_map(part_sums, parts, compute, gpus=True):
        total = sums if total is None else [a + b for a, b in zip(total, sums)]
    return total


def compute_real_stats(params: Params, *, clips_path, out_dir) -> dict:
    """Stage fvd_real_stats: the trials' real subsets, windows and conditioning clips (indices.json) and the
    I3D statistics of each trial (stats_trialNNN.npz, keyed by the protocol), cached as a DVC out. Without
    weights only the indices. The I3D work runs on params.compute's engine (here, or on Ray workers), in parts
    of PART_CLIPS clips whose per-trial feature sums are added here: the same bytes on either engine."""
    ep = params.eval
    sets = draw_real_sets(ep, clips_path)  # before any work
    proto = eval_protocol(ep)
    protocol = real_protocol(params, sets)
    reason = fvd_unavailable_reason(params, protocol)
    info = {"protocol": protocol, "available": reason is None, "reason": reason}
    stats = []
    if reason is None:
        trials = _trials(sets)
        union, where = np.unique(np.concatenate(trials), return_index=True)  # I3D sees each clip once
        on_ray = params.compute.engine == "ray"
        part_sums = _RealFeatureSums(
            _I3D(ep, proto.i3d), store_location(clips_path),
            proto.real_split, union, np.concatenate(sets["offsets"])[where], sets["window_frames"],
            np.stack([np.isin(union, t) for t in trials]), ep.batch_size, ep.precision,
            None if on_ray else inference_device(params.trainer))
        parts = [(a, min(a + PART_CLIPS, len(union))) for a in range(0, len(union), PART_CLIPS)]
        stats = [s.gaussian(proto.covariance_ddof) for s in _trial_sums(part_sums, parts, params.compute)]
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / INDICES_FILE, sets)
    for t, (mu, sigma) in enumerate(stats):
        save_stats(tmp / _stats_file(t), mu, sigma, protocol=protocol, n=proto.n_real)
    write_json(tmp / PROTOCOL_FILE, info)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info


def load_real_stats(stats_dir, protocol: dict):
    """([(mu, sigma) per trial], None) from the cache, or (None, reason) when FVD is unavailable."""
    info = json.loads((Path(stats_dir) / PROTOCOL_FILE).read_text())
    if not info["available"]:
        return None, info["reason"]
    stats = []
    for t in range(protocol["n_trials"]):  # each file raises if its protocol is not this one
        mu, sigma, _ = load_stats(Path(stats_dir) / _stats_file(t), protocol)
        stats.append((mu, sigma))
    return stats, None


def _check_samples(ep: EvalParams, sets: dict, samples: GeneratedSets, samples_dir) -> None:
    """The indices and generated sets must be the ones evaluate compares: the protocol's counts, generated
    for these clips."""
    proto = eval_protocol(ep)
    if (sets.get("fvd_protocol"), sets["n_real"], sets.get("n_generated"), len(sets["trials"])) != \
            (proto.name, proto.n_real, proto.n_generated, ep.n_trials):
        raise ParamsError(f"eval.fvd_protocol / eval.n_real / eval.n_generated / eval.n_trials: params ask for "
                          f"{ep.n_trials} trials of {proto.n_real} real and {proto.n_generated} generated videos "
                          f"({proto.name}) but the real-subset indices hold {len(sets['trials'])} of "
                          f"{sets['n_real']} and {sets.get('n_generated')} ({sets.get('fvd_protocol')}); re-run "
                          "fvd_real_stats (dvc repro)")
    want, got = np.concatenate(sets["generated"]).astype(np.int64), samples.real_index
    if got.shape != want.shape or not np.array_equal(got, want):
        raise ParamsError(f"eval.n_generated / eval.n_trials: {samples_dir} holds {len(got)} generated videos, but "
                          f"{ep.n_trials} trials x {proto.n_generated} generated videos need {len(want)}, generated "
                          "for exactly the clips of cache/i3d_real_stats/indices.json; re-run the sample stage "
                          "(dvc repro)")


def conditioning_note(samples: GeneratedSets) -> dict:
    """How the generated videos relate to their real clips, for the protocol."""
    attrs = samples.attrs
    condition = attrs.get("condition", "none")
    if condition == "none":
        frames = attrs.get("n_frames")  # recorded by the sample stage; absent in older sample stores
        return {"condition": "none"} | ({"generated_frames": frames} if frames is not None else {})
    note = {"condition": condition,
            "pairing": "generated video j of a trial is conditioned on its real clip j mod n_real (test-split protocols)",
            "conditioning": attrs.get("conditioning"), "generated_frames": attrs.get("n_frames")}
    if "n_cond_frames" in attrs:
        note["n_cond_frames"] = attrs.get("n_cond_frames")
        note["conditioning_frames_in_fvd"] = attrs.get("conditioning_frames_in_videos")
    return note


class ReconCache:
    """Rows of the reconstructions of real clips (MSE and I3D features), one .npy per batch, named by the sha256
    of everything they depend on: the VQ-VAE's files, the feature settings, the clips' bytes and windows. Lives
    outside the repository ($VIDEOGPT_CACHE/recon_rows, else ~/.cache/videogpt/recon_rows) so that DVC's
    temporary experiment workspaces share it; entries are written atomically and never change."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder

    def root(self) -> Path:
        return self.folder if self.folder is not None else cache_dir() / "recon_rows"

    def path(self, identity: str, clips: np.ndarray, offsets: np.ndarray) -> Path:
        h = hashlib.sha256(identity.encode())
        for a in (np.ascontiguousarray(clips), np.ascontiguousarray(offsets, dtype=np.int64)):
            h.update(repr((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        return self.root() / f"{h.hexdigest()}.npy"

    def save(self, path: Path, rows: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, rows, allow_pickle=False)


RECON_CACHE = ReconCache()


def _dir_sha256(folder) -> str:
    """sha256 over the names and contents of a model folder's files."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def evaluate(params: Params, *, clips_path, tokens_path, vqvae_dir, prior_dir, samples_dir, stats_dir,
             classifier_dir=None) -> dict:
    """metrics/eval.json's content. classifier_dir: the train_classifier stage's output (None: no classifier
    entries)."""
    device = inference_device(params.trainer)
    ep = params.eval
    proto = eval_protocol(ep)
    flavour, ddof = proto.i3d, proto.covariance_ddof
    sets = read_real_sets(stats_dir)
    trials = _trials(sets)
    samples = read_samples(samples_dir)
    _check_samples(ep, sets, samples, samples_dir)  # before any work
    protocol = real_protocol(params, sets)
    real_stats, reason = load_real_stats(stats_dir, protocol)

    vqvae = load_vqvae(vqvae_dir).to(device).eval()
    prior, _ = load_prior(prior_dir, vqvae)
    prior = prior.to(device)
    open_token_store(tokens_path)
    test_tokens = prior_dataset(params.prior, tokens_path, clips_path, "test")
    with torch.inference_mode(), inference_autocast(device, ep.precision):
        bpd = bits_per_dim(prior, DataLoader(test_tokens, batch_size=ep.batch_size))  # inputs via to_device

    model = _load_model(ep, flavour, device) if real_stats is not None else None
    frames = sets["window_frames"]
    scorer = None if classifier_dir is None else load_classifier(classifier_dir)
    cls_model = scorer.model.to(device) if scorer is not None and scorer.model is not None else None

    def features(videos_uint8):
        return i3d_features(model, videos_uint8, batch_size=ep.batch_size, device=device, precision=ep.precision)

    # Every real clip of the trials once: NMSE/PSNR of its reconstruction and, windowed like the real clip,
    # the reconstruction's features
    union, where = np.unique(np.concatenate(trials), return_index=True)
    offsets = np.concatenate(sets["offsets"])[where]

    # What a batch's rows depend on besides its clips: the VQ-VAE's files and how features are taken. Every
    # evaluate of a grid that keeps the VQ-VAE (a prior-size table) reuses them instead of re-encoding, decoding
    # and featurising the same reconstructions.
    recon_identity = json.dumps({"vqvae": _dir_sha256(vqvae_dir), "device": device.type, "precision": ep.precision,
                                 "features": None if model is None else [flavour, protocol["weights_sha256"],
                                                                         frames],
                                 "classifier": None if cls_model is None else scorer.sha256}, sort_keys=True)

    @torch.inference_mode()
    def reconstruct(a: int, b: int) -> np.ndarray:
        """Rows [MSE, I3D features of the reconstruction (if FVD is available), the classifier's p(y|x) and
        features of the real clip and of its reconstruction (if there is a classifier)] of real clips union[a:b]."""
        clips = read_clips_at(clips_path, proto.real_split, union[a:b])
        cached = RECON_CACHE.path(recon_identity, clips, offsets[a:b])
        if cached.is_file():
            return np.load(cached, allow_pickle=False)
        x = to_float(to_device(torch.as_tensor(clips), device))
        recon = vqvae.decode(vqvae.encode(x))
        parts = [clip_mse(x, recon).double().cpu().numpy()[:, None]]
        if model is not None:
            parts.append(features(_windows(generated_to_uint8(recon.cpu(), flavour).numpy(), offsets[a:b], frames)))
        if cls_model is not None:  # whole clips, the reconstructions rounded as the sample stage rounds samples
            for videos in (clips, to_uint8(recon.cpu()).numpy()):
                parts += classify(cls_model, videos, batch_size=ep.batch_size, device=device)
        rows = np.concatenate(parts, axis=1)
        RECON_CACHE.save(cached, rows)
        return rows

    rows = np.concatenate([reconstruct(a, min(a + ep.batch_size, len(union)))
                           for a in range(0, len(union), ep.batch_size)])
    n_cls = 0 if cls_model is None else 2 * (cls_model.config.n_classes + cls_model.config.feature_dim)
    per_trial = [rows[_rows_of(union, t)] for t in trials]
    cls_rows = [r[:, r.shape[1] - n_cls:] for r in per_trial]  # the classifier's columns, then the rest
    per_trial = [r[:, :r.shape[1] - n_cls] for r in per_trial]
    recon = [recon_scores(r[:, 0]) for r in per_trial]

    def fd(a, b):
        return frechet_distance(*a, *b, sqrt=proto.sqrt)

    # Long samples (sample.n_frames) are not compared with clips of another length; R-FVD still is
    t_samples, t_prior = samples.tokens.shape[1], prior.config.latent_shape[0]
    length_reason = None if t_samples == t_prior else (
        f"the samples have {t_samples} latent frames (sample.n_frames), the real clips {t_prior}: FVD compares "
        "videos of one length")
    fvd, r_fvd, fvd_star = [None] * len(trials), [None] * len(trials), [None] * len(trials)
    if model is not None and length_reason is not None:
        for t, real in enumerate(real_stats):
            r_fvd[t] = fd(gaussian_stats(per_trial[t][:, 1:], ddof), real)
    elif model is not None:
        tokens, n_gen = samples.tokens, proto.n_generated
        on_ray = params.compute.engine == "ray"  # the workers get a CPU copy of the VQ-VAE and pick a device
        i3d = _I3D(ep, flavour)
        i3d.model = model  # here: the one already loaded (not pickled)
        part_sums = _GeneratedFeatureSums(load_vqvae(vqvae_dir).eval() if on_ray else vqvae, i3d, frames, n_gen,
                                          len(trials), ep.batch_size, ep.precision, None if on_ray else device)
        parts = ((a, np.asarray(tokens[a:a + PART_CLIPS])) for a in range(0, tokens.shape[0], PART_CLIPS))
        gen_sums = _trial_sums(part_sums, parts, params.compute)
        for t, real in enumerate(real_stats):
            gen_stats = gen_sums[t].gaussian(ddof)
            recon_stats = gaussian_stats(per_trial[t][:, 1:], ddof)
            fvd[t] = fd(gen_stats, real)
            r_fvd[t] = fd(recon_stats, real)
            fvd_star[t] = fd(gen_stats, recon_stats)

    fvd_protocol_doc = protocol | {"std": "population (np.std over trials)", **conditioning_note(samples)}

    def entry(values, what, why_not=None):
        return {**trial_summary(values), "reason": (reason or why_not) if values[0] is None else None,
                "what": what, "comparable_with": protocol["comparable_with"], "protocol": fvd_protocol_doc}

    subset = {"split": proto.real_split, "n": proto.n_real, "n_trials": len(trials),
              "clips": "the FVD trials' real subsets", "std": "population (np.std over trials)"}
    return {
        "fvd": entry(fvd, "FD(I3D(samples), I3D(real clips)), per trial", length_reason),
        "r_fvd": entry(r_fvd, "FD(I3D(VQ-VAE reconstructions), I3D(real clips)), per trial"),
        "fvd_star": entry(fvd_star, "FD(I3D(samples), I3D(VQ-VAE reconstructions)), per trial", length_reason),
        "recon": {"nmse": trial_summary([r["nmse"] for r in recon]),
                  "psnr": trial_summary([r["psnr"] for r in recon]),
                  "protocol": recon_protocol(proto.n_real) | subset},
        "test_bits_per_dim": {"value": bpd, "protocol": bits_protocol(len(test_tokens))},
        "is": inception_score_entry(ep, vqvae, samples.tokens, device),
        **({} if scorer is None else {"classifier": classifier_entry(
            ep, scorer, cls_model, cls_rows, vqvae, samples, length_reason, protocol, conditioning_note(samples),
            device)}),
    }


IS_SAMPLES_PER_LOOP, IS_LOOPS = 2048, 10  # TGANv2's compute_inception_score, behind the paper's Table 2


def inception_score_entry(ep: EvalParams, vqvae, tokens, device) -> dict:
    """The Inception Score of the generated videos under TGANv2's UCF-101 C3D (paper Table 2): mean ± population
    std over loops of up to 2,048 videos, or null with the reason (no weights, not 16 frames)."""
    from videogpt.metrics import c3d
    n = int(tokens.shape[0])
    per_loop = min(IS_SAMPLES_PER_LOOP, n)
    protocol = {"network": "TGANv2 C3DVersion1UCF101 (C3D fine-tuned on UCF-101, 101 classes)",
                "weights": ep.c3d_weights,
                "weights_sha256": file_sha256(ep.c3d_weights) if ep.c3d_weights and Path(ep.c3d_weights).is_file()
                else None,
                "input": "the generated videos rounded to uint8, then 2*x/255 - 1; inside the network BGR x 128, "
                         "112x112 bilinear (aligned corners), minus TGANv2's mean clip",
                "score": "exp(E KL(p(y|x) || p(y))), eps 1e-20", "samples_per_loop": per_loop,
                "n_loops": n // per_loop, "std": "population (np.std over loops)"}
    anchor = per_loop == IS_SAMPLES_PER_LOOP and n // per_loop >= IS_LOOPS
    comparable = ["VideoGPT (Yan et al. 2021), Table 2, when the data is UCF-101 16-frame clips"] if anchor else []
    why_not = None if anchor else (f"{n // per_loop} loop(s) of {per_loop} samples; TGANv2's protocol uses "
                                   f"{IS_LOOPS} loops of {IS_SAMPLES_PER_LOOP}")
    reason = None
    if ep.c3d_weights is None:
        reason = ("no C3D weights: eval.c3d_weights is null (TGANv2's conv3d_deepnetA_ucf.npz and mean2.npz: "
                  "`python -m videogpt.download c3d`)")
    values = [None]
    if reason is None:
        model = c3d.load_c3d(ep.c3d_weights).to(device)
        videos = decoded_samples(vqvae, tokens, ep.batch_size, device)
        frames = videos.shape[1]
        if frames != c3d.N_FRAMES:
            reason = f"the samples have {frames} frames; the C3D takes {c3d.N_FRAMES}"
        else:
            probs = c3d.class_probabilities(model, videos, batch_size=ep.batch_size, device=device)
            values = c3d.inception_score_loops(probs, per_loop)
    return {**trial_summary(values), "reason": reason, "what": "Inception Score of the samples (higher is better)",
            "comparable_with": comparable if reason is None else [], "not_comparable_because": why_not,
            "protocol": protocol}


@torch.inference_mode()
def decoded_samples(vqvae, tokens, batch_size: int, device) -> np.ndarray:
    """The sampled tokens (N, t, h, w) decoded to uint8 videos (N, T, H, W, 3), rounded as the sample stage
    stores them."""
    videos = []
    for start in range(0, int(tokens.shape[0]), batch_size):
        batch = to_device(torch.as_tensor(tokens[start:start + batch_size], dtype=torch.long), device)
        videos.append(to_uint8(vqvae.decode(batch).cpu()).numpy())
    return np.concatenate(videos)


CLASSIFIER_NOTE = ("comparable only between this project's runs on the same data scored by the same classifier file "
                   "(weights_sha256); not with any paper's numbers")


def classifier_entry(ep: EvalParams, scorer, model, real_rows, vqvae, samples: GeneratedSets, length_reason,
                     fvd_protocol_doc: dict, conditioning: dict, device) -> dict:
    """The sample-quality score of the run's own classifier (videogpt.metrics.classifier, stage
    train_classifier), per FVD trial, mean ± population std over trials: the samples' classifier Inception Score,
    the Fréchet distance between the classifier features of the trial's samples and of its real clips (the FVD
    subsets, whole clips), and, for a class-conditional prior, the accuracy of the classifier on the samples
    against the labels they were drawn with; as reference lines, the IS of the real clips and the IS and FD of
    their VQ-VAE reconstructions. real_rows[t]: (n_real, 2 (K + D)) p(y|x) and features of the trial's real
    clips, then of their reconstructions. Null with the reason when there is no classifier (no labels)."""
    proto = eval_protocol(ep)
    n_trials = len(real_rows)
    protocol = {"score": "classifier", "weights_sha256": scorer.sha256,
                "classifier": None if model is None else {
                    "n_classes": model.config.n_classes, "input_shape": list(model.config.input_shape),
                    "width": model.config.width, "n_blocks": model.config.n_blocks,
                    "input_pool": model.config.input_pool, "test_accuracy": scorer.meta.get("test_accuracy")},
                "split": proto.real_split, "n_real": proto.n_real, "n_generated": proto.n_generated,
                "n_trials": n_trials, "indices_sha256": fvd_protocol_doc["indices_sha256"],
                "selection": fvd_protocol_doc["selection"], "seed": ep.seed,
                "input": "whole clips as stored (uint8); samples and reconstructions rounded to uint8",
                "is": "exp(E_x KL(p(y|x) || p(y))) over a trial's videos, eps 1e-20",
                "fd": "Frechet distance between Gaussians fitted to the classifier's pooled features",
                "covariance_ddof": proto.covariance_ddof, "sqrt": proto.sqrt,
                "std": "population (np.std over trials)", **conditioning,
                "comparable_with": [], "note": CLASSIFIER_NOTE}
    k = None if model is None else model.config.n_classes

    def split(r):  # (p(y|x), features) of real clips and of their reconstructions
        d = (r.shape[1] - 2 * k) // 2
        return (r[:, :k], r[:, k:k + d]), (r[:, k + d:2 * k + d], r[:, 2 * k + d:])

    def entry(values, what, reason=None):
        return {**trial_summary(values), "reason": (scorer.reason or reason) if values[0] is None else None,
                "what": what, "protocol": protocol}

    def fd(a, b):
        return frechet_distance(*gaussian_stats(a, proto.covariance_ddof), *gaussian_stats(b, proto.covariance_ddof),
                                sqrt=proto.sqrt)

    none = [None] * n_trials
    real_is, recon_is, recon_fd, is_, fd_, acc = none, none, none, none, none, none
    labels = samples.attrs.get("labels")
    acc_reason = (None if labels is not None else
                  f"the prior is not class-conditional (condition {samples.attrs.get('condition', 'none')})")
    if model is not None:
        pairs = [split(r) for r in real_rows]
        real_is = [inception_score(real[0]) for real, _ in pairs]
        recon_is = [inception_score(rec[0]) for _, rec in pairs]
        recon_fd = [fd(rec[1], real[1]) for real, rec in pairs]
        if length_reason is None:
            probs, feats = classify(model, decoded_samples(vqvae, samples.tokens, ep.batch_size, device),
                                    batch_size=ep.batch_size, device=device)
            n = proto.n_generated
            is_ = [inception_score(probs[t * n:(t + 1) * n]) for t in range(n_trials)]
            fd_ = [fd(feats[t * n:(t + 1) * n], real[1]) for t, (real, _) in enumerate(pairs)]
            if labels is not None:
                labels = np.asarray(labels)
                acc = [label_accuracy(probs[t * n:(t + 1) * n], labels[t * n:(t + 1) * n]) for t in range(n_trials)]
    return {
        "is": entry(is_, "classifier Inception Score of the samples, per trial (higher is better)", length_reason),
        "fd": entry(fd_, "FD(classifier features of the samples, of the trial's real clips), per trial (lower is "
                         "better)", length_reason),
        "accuracy": entry(acc, "the classifier's accuracy on the samples against the labels they were drawn with "
                               f"(chance: 1/{k or 'n_classes'})", length_reason or acc_reason),
        "real_is": entry(real_is, "reference: classifier Inception Score of the trials' real clips"),
        "recon_is": entry(recon_is, "reference: classifier Inception Score of their VQ-VAE reconstructions"),
        "recon_fd": entry(recon_fd, "reference: FD(classifier features of the reconstructions, of the real clips)"),
    }
