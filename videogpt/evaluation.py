"""The evaluate stage's procedures: real-set I3D statistics, FVD / R-FVD / FVD*, and the models' reports
(videogpt.reports) on the FVD trials' real subsets, gathered into metrics/eval.json.

Every number is written beside its protocol (which clips, how many, frames, resolution, resize,
weights sha256), because FVD from different protocols is not comparable. Without I3D weights
the FVD entries are null with the reason; nothing else stands in for them.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import EvalParams, Params, ParamsError
from videogpt.data.clip_store import clips_array, read_clips_at
from videogpt.distributed import (batches_to, inference_autocast, inference_device, rank_and_world, sharded_map,
                                  to_device)
from videogpt.fileio import file_sha256, write_json
from videogpt.generate import GeneratedSets, read_samples
from videogpt.metrics.frechet import frechet_distance, gaussian_stats, load_stats, save_stats
from videogpt.metrics.i3d import i3d_features, load_i3d
from videogpt.metrics.protocol import MIN_FRAMES, generated_to_uint8, real_to_uint8
from videogpt.metrics.protocol import protocol as i3d_protocol
from videogpt.reports import bits_per_dim, bits_protocol, clip_mse, recon_protocol, recon_scores
from videogpt.metrics.trials import real_subsets, trial_summary
from videogpt.tokens import open_token_store, prior_dataset
from videogpt.video import to_float

INDICES_FILE, PROTOCOL_FILE = "indices.json", "protocol.json"


# --------------------------------------------------------------------------------------------
# FVD and the evaluate stage
#
# Trials (videogpt.metrics.trials): trial t compares eval.n_real real test clips, a seeded random subset
# of the whole test split, with as many generated videos; generated video t * n_real + i belongs to real
# clip trials[t][i] (its conditioning came from that clip). The fvd_real_stats stage draws the subsets,
# writes them to indices.json beside the real statistics (one .npz per trial) and keys those by them; the
# sample stage generates for exactly those clips; evaluate checks both before any I3D work.


def select_real_subsets(ep: EvalParams, clips_path) -> list[np.ndarray]:
    """The trials' real subsets (eval.n_trials arrays of eval.n_real sorted test-clip indices); a test
    split smaller than eval.n_real is an error naming the keys, raised before any work."""
    n_test = clips_array(clips_path, "test").shape[0]
    if ep.n_real > n_test:
        raise ParamsError(f"eval.n_real: {ep.n_real} exceeds the {n_test} clips of the test split in {clips_path}; "
                          f"each of the eval.n_trials={ep.n_trials} trials needs eval.n_real distinct real clips "
                          "(and generates as many videos): lower eval.n_real or add test clips")
    return real_subsets(n_test, ep.n_real, ep.n_trials, ep.seed)


def read_real_subsets(stats_dir) -> list[np.ndarray]:
    """The trials' real subsets as the fvd_real_stats stage drew them (its indices.json)."""
    path = Path(stats_dir) / INDICES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no real-subset indices; run the fvd_real_stats stage first (dvc repro)")
    return [np.asarray(t, np.int64) for t in json.loads(path.read_text())["trials"]]


def _indices_doc(ep: EvalParams, n_test: int, trials: list[np.ndarray]) -> dict:
    return {"split": "test", "n_test": n_test, "seed": ep.seed, "n_real": ep.n_real, "n_trials": ep.n_trials,
            "trials": [t.tolist() for t in trials]}


def real_protocol(params: Params, clips_path, trials: list[np.ndarray]) -> dict:
    """What defines the real-set statistics (the I3D flavour, weights, which clips); the cache is valid only
    for an identical protocol."""
    ep = params.eval
    test = clips_array(clips_path, "test")
    weights = ep.i3d_weights
    trials_json = json.dumps([t.tolist() for t in trials], separators=(",", ":"))
    return {**i3d_protocol(ep.i3d_protocol), "weights": weights,
            "weights_sha256": file_sha256(weights) if weights and Path(weights).is_file() else None,
            "split": "test", "n_test": int(test.shape[0]), "n_real": ep.n_real, "n_trials": len(trials),
            "selection": "per trial, a uniform random sample without replacement of the test split, seeded "
                         "with (eval.seed, trial)", "seed": ep.seed,
            "indices_sha256": hashlib.sha256(trials_json.encode()).hexdigest(),
            "frames": int(test.shape[1]), "resolution": int(test.shape[2]),
            **({"precision": ep.precision} if ep.precision != "32" else {})}  # bf16 features: other statistics


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


def _stats_file(trial: int) -> str:
    return f"stats_trial{trial:03d}.npz"


def _rows_of(union: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Positions of a trial's clip indices in the sorted union of all trials' indices."""
    return np.searchsorted(union, subset)


def compute_real_stats(params: Params, *, clips_path, out_dir) -> dict:
    """Stage fvd_real_stats: the trials' real subsets (indices.json) and the I3D statistics of each
    (stats_trialNNN.npz, keyed by the protocol), cached as a DVC out. Without weights only the subsets."""
    ep = params.eval
    trials = select_real_subsets(ep, clips_path)  # before any work
    protocol = real_protocol(params, clips_path, trials)
    reason = fvd_unavailable_reason(params, protocol)
    info = {"protocol": protocol, "available": reason is None, "reason": reason}
    stats = None
    if reason is None:
        device = inference_device(params.trainer)
        model = load_i3d(ep.i3d_weights, ep.i3d_protocol).to(device)
        union = np.unique(np.concatenate(trials))  # trials may share clips: I3D sees each once
        feats = sharded_map(lambda videos: i3d_features(model, videos, batch_size=ep.batch_size, device=device,
                                                         precision=ep.precision),
                            len(union), ep.batch_size,
                            lambda a, b: real_to_uint8(read_clips_at(clips_path, "test", union[a:b]),
                                                       ep.i3d_protocol))
        stats = [gaussian_stats(feats[_rows_of(union, t)]) for t in trials]
    if rank_and_world()[0] != 0:  # every rank holds the same statistics; rank 0 publishes them
        return info
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / INDICES_FILE, _indices_doc(ep, protocol["n_test"], trials))
    for t, (mu, sigma) in enumerate(stats or []):
        save_stats(tmp / _stats_file(t), mu, sigma, protocol=protocol, n=ep.n_real)
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


def _check_samples(ep: EvalParams, trials: list[np.ndarray], samples: GeneratedSets, samples_dir) -> None:
    """The generated sets must be the ones evaluate compares: n_real per trial, for these real clips."""
    if len(trials) != ep.n_trials or any(len(t) != ep.n_real for t in trials):
        raise ParamsError(f"eval.n_real / eval.n_trials: params ask for {ep.n_trials} trials of {ep.n_real} clips "
                          f"but the real-subset indices hold {len(trials)} of {len(trials[0])}; "
                          "re-run fvd_real_stats (dvc repro)")
    want, got = np.concatenate(trials), samples.real_index
    if got.shape != want.shape or not np.array_equal(got, want):
        raise ParamsError(f"eval.n_real / eval.n_trials: {samples_dir} holds {len(got)} generated videos, but "
                          f"{ep.n_trials} trials x {ep.n_real} real clips need {len(want)}, generated for exactly "
                          "those clips (cache/i3d_real_stats/indices.json); re-run the sample stage (dvc repro)")


def conditioning_note(samples: GeneratedSets) -> dict:
    """How the generated videos relate to their real clips, for the protocol."""
    attrs = samples.attrs
    condition = attrs.get("condition", "none")
    if condition == "none":
        frames = attrs.get("n_frames")  # recorded by the sample stage; absent in older sample stores
        return {"condition": "none"} | ({"generated_frames": frames} if frames is not None else {})
    note = {"condition": condition, "pairing": "generated video i of a trial is conditioned on real clip i",
            "conditioning": attrs.get("conditioning"), "generated_frames": attrs.get("n_frames")}
    if "n_cond_frames" in attrs:
        note["n_cond_frames"] = attrs.get("n_cond_frames")
        note["conditioning_frames_in_fvd"] = attrs.get("conditioning_frames_in_videos")
    return note


def evaluate(params: Params, *, clips_path, tokens_path, vqvae_dir, prior_dir, samples_dir, stats_dir) -> dict:
    device = inference_device(params.trainer)
    ep = params.eval
    flavour = ep.i3d_protocol
    trials = read_real_subsets(stats_dir)
    samples = read_samples(samples_dir)
    _check_samples(ep, trials, samples, samples_dir)  # before any work
    protocol = real_protocol(params, clips_path, trials)
    real_stats, reason = load_real_stats(stats_dir, protocol)

    vqvae = load_vqvae(vqvae_dir).to(device).eval()
    prior, _ = load_prior(prior_dir, vqvae)
    prior = prior.to(device)
    open_token_store(tokens_path)
    test_tokens = prior_dataset(params.prior, tokens_path, clips_path, "test")
    with torch.inference_mode(), inference_autocast(device, ep.precision):
        bpd = bits_per_dim(prior, batches_to(DataLoader(test_tokens, batch_size=ep.batch_size), device))

    model = load_i3d(ep.i3d_weights, flavour).to(device) if real_stats is not None else None

    def features(videos_uint8):
        return i3d_features(model, videos_uint8, batch_size=ep.batch_size, device=device, precision=ep.precision)

    @torch.inference_mode()
    def reconstruct(pixels: np.ndarray) -> np.ndarray:
        """Rows [MSE, I3D features of the reconstruction (if FVD is available)] of a batch of real clips."""
        x = to_float(to_device(torch.as_tensor(pixels), device))
        recon = vqvae.decode(vqvae.encode(x))
        mse = clip_mse(x, recon).double().cpu().numpy()[:, None]
        if model is None:
            return mse
        return np.concatenate([mse, features(generated_to_uint8(recon.cpu(), flavour))], axis=1)

    # Every clip of the trials' subsets once: NMSE/PSNR and reconstruction features per trial from the rows
    union = np.unique(np.concatenate(trials))
    rows = sharded_map(reconstruct, len(union), ep.batch_size,
                       lambda a, b: read_clips_at(clips_path, "test", union[a:b]))
    per_trial = [rows[_rows_of(union, t)] for t in trials]
    recon = [recon_scores(r[:, 0]) for r in per_trial]

    # Long samples (sample.n_frames) are not compared with clips of another length; R-FVD still is
    t_samples, t_prior = samples.tokens.shape[1], prior.config.latent_shape[0]
    length_reason = None if t_samples == t_prior else (
        f"the samples have {t_samples} latent frames (sample.n_frames), the real clips {t_prior}: FVD compares "
        "videos of one length")
    fvd, r_fvd, fvd_star = [None] * len(trials), [None] * len(trials), [None] * len(trials)
    if model is not None and length_reason is not None:
        for t, real in enumerate(real_stats):
            r_fvd[t] = frechet_distance(*gaussian_stats(per_trial[t][:, 1:]), *real)
    elif model is not None:
        tokens = samples.tokens

        @torch.inference_mode()
        def generated(a, b):
            return generated_to_uint8(vqvae.decode(to_device(torch.as_tensor(tokens[a:b], dtype=torch.long),
                                                             device)).cpu(),
                                      flavour)

        gen = sharded_map(features, tokens.shape[0], ep.batch_size, generated)
        for t, real in enumerate(real_stats):
            gen_stats = gaussian_stats(gen[t * ep.n_real:(t + 1) * ep.n_real])
            recon_stats = gaussian_stats(per_trial[t][:, 1:])
            fvd[t] = frechet_distance(*gen_stats, *real)
            r_fvd[t] = frechet_distance(*recon_stats, *real)
            fvd_star[t] = frechet_distance(*gen_stats, *recon_stats)

    fvd_protocol = protocol | {"n_generated": ep.n_real, "std": "population (np.std over trials)",
                               **conditioning_note(samples)}

    def entry(values, what, why_not=None):
        return {**trial_summary(values), "reason": (reason or why_not) if values[0] is None else None,
                "what": what, "protocol": fvd_protocol}

    subset = {"split": "test", "n": ep.n_real, "n_trials": len(trials), "clips": "the FVD trials' real subsets",
              "std": "population (np.std over trials)"}
    return {
        "fvd": entry(fvd, "FD(I3D(samples), I3D(real test clips)), per trial", length_reason),
        "r_fvd": entry(r_fvd, "FD(I3D(VQ-VAE reconstructions), I3D(real test clips)), per trial"),
        "fvd_star": entry(fvd_star, "FD(I3D(samples), I3D(VQ-VAE reconstructions)), per trial", length_reason),
        "recon": {"nmse": trial_summary([r["nmse"] for r in recon]),
                  "psnr": trial_summary([r["psnr"] for r in recon]),
                  "protocol": recon_protocol(ep.n_real) | subset},
        "test_bits_per_dim": {"value": bpd, "protocol": bits_protocol(len(test_tokens))},
    }
