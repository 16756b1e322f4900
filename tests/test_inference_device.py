"""The standalone stages run their heavy work on the run's device: fvd_real_stats, tokenize, sample and evaluate,
run in-process on a tiny laid-out pipeline, send every model input through videogpt.distributed.to_device with
the device videogpt.distributed.inference_device chose (a fake hook records both), clips travel as uint8, and the
prior samples where that device is. Here the device is a sentinel CPU device (`cpu:0`, which compares unequal to
plain `cpu`, so a hard-coded "cpu" is caught); tests/gpu/ runs the same check on CUDA."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from i3d_layout import published_layout_state_dict
from videogpt.config import parse, to_dict

N = {"train": 4, "test": 4}
CLIP = (16, 16, 16)  # T, H, W: the I3D needs >= 9 frames
SENTINEL = torch.device("cpu", 0)


def lay_out(root: Path, accelerator: str, precision: str = "32") -> None:
    """data/clips.zarr, models/vqvae and models/prior (random weights, the prior on the VQ-VAE's codebook), I3D
    weights in the published layout, and params.yaml to match, as the stages expect them in a repository."""
    from videogpt.prior import Prior, PriorConfig
    from videogpt.vqvae import VQVAE, VQVAEConfig
    rng = np.random.default_rng(0)
    store = zarr.open_group(str(root / "data" / "clips.zarr"), mode="w")
    store.attrs.update({"class_names": [], "counts": N, "fps": 8})
    for split, n in N.items():
        g = store.create_group(split)
        g.create_array("clips", data=rng.integers(0, 256, (n, *CLIP, 3), dtype=np.uint8), chunks=(1, *CLIP, 3))
        g.create_array("labels", data=np.full(n, -1, np.int32))
    (root / "data" / "manifest.csv").write_text("clip\n")
    torch.manual_seed(0)
    vq_cfg = VQVAEConfig(input_shape=CLIP, n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(4, 4, 4),
                         n_codes=16, embedding_dim=8, n_heads=2)
    vqvae = VQVAE(vq_cfg).train()
    vqvae(torch.rand(8, 3, *CLIP) - 0.5)  # data-dependent codebook initialisation
    vqvae.eval().save_pretrained(root / "models" / "vqvae")
    p_cfg = PriorConfig(latent_shape=vq_cfg.latent_shape, n_codes=16, embedding_dim=8, n_layer=1, n_head=2,
                        n_embd=16, dropout=0.0, attn_dropout=0.0)
    Prior(p_cfg, vqvae.codebook.embeddings.clone()).save_pretrained(root / "models" / "prior")
    torch.save(published_layout_state_dict(seed=0), root / "i3d.pt")
    raw = to_dict(parse({}))
    overrides = {"data": {"resolution": CLIP[1], "sequence_length": CLIP[0]},
                 "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [4, 4, 4],
                           "n_codes": 16, "embedding_dim": 8},
                 "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                 "tokenize": {"batch_size": 3, "precision": precision},
                 "sample": {"batch_size": 2},
                 "eval": {"i3d_weights": str(root / "i3d.pt"), "n_real": 2, "n_trials": 1, "batch_size": 2,
                          "precision": precision},
                 "trainer": {"accelerator": accelerator}}
    for section, values in overrides.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(parse(raw)), sort_keys=False))


def run_inference_stages(root: Path, monkeypatch, device_hook=None) -> dict:
    """Run fvd_real_stats, tokenize, sample and evaluate in `root` (laid out by lay_out). Returns
    {"moved": {stage: [(module, dtype, n, device)]}, "sampled_on": [prior device], "chosen": [devices]}:
    every call of the device helper, per stage. device_hook, if given, replaces inference_device."""
    import stages.evaluate
    import stages.fvd_real_stats
    import stages.sample
    import stages.tokenize
    import videogpt.distributed as distributed
    import videogpt.evaluation as evaluation
    import videogpt.generate as generate
    import videogpt.metrics.i3d as i3d
    import videogpt.reports as reports
    import videogpt.tokens as tokens

    log = {"moved": defaultdict(list), "sampled_on": [], "chosen": []}
    stage = [None]
    real_to_device, real_choice, real_sample = distributed.to_device, distributed.inference_device, \
        generate.sample_tokens

    def choose(trainer_params):
        device = (device_hook or real_choice)(trainer_params)
        log["chosen"].append(device)
        return device

    def recorder(module):
        def to_device(x, device):
            log["moved"][stage[0]].append((module, x.dtype, x.shape[0], torch.device(device)))
            return real_to_device(x, device)
        return to_device

    def sample_tokens(prior, n, **kw):
        out = real_sample(prior, n, **kw)
        log["sampled_on"].append(next(prior.parameters()).device)
        return out

    for mod in (distributed, tokens, i3d, evaluation, reports):
        monkeypatch.setattr(mod, "to_device", recorder(mod.__name__))
    for mod in (distributed, evaluation, generate):
        monkeypatch.setattr(mod, "inference_device", choose)
    monkeypatch.setattr(generate, "sample_tokens", sample_tokens)
    monkeypatch.chdir(root)
    for name, main in (("fvd_real_stats", stages.fvd_real_stats.main), ("tokenize", stages.tokenize.main),
                       ("sample", stages.sample.main), ("evaluate", stages.evaluate.main)):
        stage[0] = name
        main()
    return log


def assert_on(log: dict, device: torch.device) -> None:
    """Every stage's inputs went through the helper to `device`, uint8 clips as uint8, each item once."""
    moved = log["moved"]
    assert log["chosen"] and all(d == device for d in log["chosen"]), log["chosen"]
    for stage, rows in moved.items():
        # the models' reports (bits/dim) move inputs to where the model is; a CPU parameter's device has no index,
        # so there the sentinel `cpu:0` reads as `cpu`: compare the type
        assert all(d == device or (m == "videogpt.reports" and d.type == device.type) for m, *_, d in rows), \
            (stage, rows)

    def count(stage, module, dtype):
        return sum(n for m, dt, n, _ in moved[stage] if m == module and dt == dtype)

    assert count("fvd_real_stats", "videogpt.metrics.i3d", torch.uint8) == 2  # the trial's 2 real clips
    assert count("tokenize", "videogpt.tokens", torch.uint8) == sum(N.values())  # every clip, as uint8
    assert {dt for m, dt, *_ in moved["tokenize"]} == {torch.uint8}
    assert count("evaluate", "videogpt.reports", torch.int64) == N["test"]  # bits/dim over the test grids
    assert count("evaluate", "videogpt.evaluation", torch.uint8) == 2  # reconstructions of the real clips
    assert count("evaluate", "videogpt.evaluation", torch.int64) == 2  # decoding the 2 samples
    assert count("evaluate", "videogpt.metrics.i3d", torch.uint8) == 4  # I3D: reconstructions and samples
    assert [d.type for d in log["sampled_on"]] == [device.type]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    lay_out(root, "cpu")
    with pytest.MonkeyPatch.context() as mp:
        log = run_inference_stages(root, mp, device_hook=lambda tp: SENTINEL)
    return root, log


def test_standalone_stages_go_through_the_device_helper(cpu_run):
    _, log = cpu_run
    assert_on(log, SENTINEL)


def test_bits_per_dim_on_the_device_equals_the_prior_loss_over_the_test_tokens(cpu_run):
    from videogpt.checkpoint import load_prior
    root, _ = cpu_run
    report = json.loads((root / "metrics" / "eval.json").read_text())
    prior, _ = load_prior(root / "models" / "prior")
    test = torch.from_numpy(zarr.open_group(str(root / "data" / "tokens.zarr"), mode="r")["test"]["tokens"][:]
                            .astype(np.int64))
    with torch.no_grad():
        expected = float(prior.loss(test)) / math.log(2)  # one batch of all 4 grids: equal counts per batch
    assert report["test_bits_per_dim"]["value"] == pytest.approx(expected, rel=1e-6)
    assert report["fvd"]["mean"] is not None and math.isfinite(report["fvd"]["mean"])


def test_tokens_are_the_encoder_codes_of_the_float_clips(cpu_run):
    """uint8 clips converted on the device give the codes of the float clips (the former worker-side path)."""
    from videogpt.checkpoint import load_vqvae
    from videogpt.data.dataset import ClipDataset
    root, _ = cpu_run
    vqvae = load_vqvae(root / "models" / "vqvae")
    store = zarr.open_group(str(root / "data" / "tokens.zarr"), mode="r")
    for split in N:
        clips = torch.stack([ClipDataset(root / "data" / "clips.zarr", split)[i][0] for i in range(N[split])])
        assert np.array_equal(store[split]["tokens"][:], vqvae.encode(clips).numpy())


def test_bf16_inference_autocasts_the_networks_but_not_the_code_search(tmp_path):
    """tokenize.precision: bf16 runs the encoder under bf16 autocast and the nearest-code search without it;
    eval.precision: bf16 runs the I3D under autocast and keeps its features float64."""
    from videogpt.distributed import inference_autocast
    from videogpt.metrics.i3d import I3D, i3d_features
    from videogpt.tokens import build_token_store
    from videogpt.vqvae import VQVAE, VQVAEConfig
    seen = defaultdict(list)
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1,
                              downsample=(2, 4, 4), n_codes=16, embedding_dim=8)).train()
    vqvae(torch.rand(4, 3, 4, 16, 16) - 0.5)
    vqvae.eval()
    vqvae.encoder.register_forward_pre_hook(lambda m, a: seen["encoder"].append(torch.is_autocast_enabled("cpu")))
    codes = vqvae.codebook.codes

    def watched_codes(flat):
        seen["codes"].append((torch.is_autocast_enabled("cpu"), flat.dtype))
        return codes(flat)
    vqvae.codebook.codes = watched_codes
    store = zarr.open_group(str(tmp_path / "clips.zarr"), mode="w")
    store.attrs.update({"counts": {"train": 3}})
    g = store.create_group("train")
    g.create_array("clips", data=np.random.default_rng(1).integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8),
                   chunks=(1, 4, 16, 16, 3))
    g.create_array("labels", data=np.zeros(3, np.int32))
    build_token_store(vqvae, tmp_path / "clips.zarr", tmp_path / "t.zarr", fingerprint="fp", batch_size=2,
                      precision="bf16", progress=False)
    assert seen["encoder"] == [True, True]
    assert seen["codes"] == [(False, torch.float32)] * 2

    model = I3D()
    model.register_forward_pre_hook(lambda m, a: seen["i3d"].append(torch.is_autocast_enabled("cpu")))
    videos = np.random.default_rng(0).integers(0, 256, (2, 10, 32, 32, 3), dtype=np.uint8)
    f32 = i3d_features(model, videos, batch_size=2)
    bf16 = i3d_features(model, videos, batch_size=2, precision="bf16")
    assert seen["i3d"] == [False, True] and bf16.dtype == np.float64
    assert np.abs(bf16 - f32).max() <= 0.05 * np.abs(f32).max()  # bf16 keeps ~3 significant digits
    with inference_autocast("cpu", "32"):
        assert not torch.is_autocast_enabled("cpu")


def test_end_of_training_reports_go_through_the_device_helper(cpu_run, monkeypatch):
    """The training stages' own reports (reconstructions, bits/dim) send their inputs through the same helper."""
    import videogpt.reports as reports
    from videogpt.checkpoint import load_prior, load_vqvae
    from videogpt.data.dataset import ClipDataset
    from videogpt.tokens import prior_dataset
    root, _ = cpu_run
    moved = []
    real = reports.to_device

    def to_device(x, device):
        moved.append((x.dtype, x.shape[0], torch.device(device)))
        return real(x, device)

    monkeypatch.setattr(reports, "to_device", to_device)
    monkeypatch.chdir(root)
    vqvae = load_vqvae("models/vqvae")
    report = reports.reconstruction_report(vqvae, torch.utils.data.DataLoader(ClipDataset("data/clips.zarr", "test"),
                                                                              batch_size=3), vqvae.config.n_codes)
    assert report["n_clips"] == N["test"] and sum(n for dt, n, _ in moved if dt == torch.float32) == N["test"]
    prior, _ = load_prior("models/prior", vqvae)
    params = parse(yaml.safe_load(open("params.yaml")))
    moved.clear()
    reports.bits_per_dim(prior, torch.utils.data.DataLoader(
        prior_dataset(params.prior, "data/tokens.zarr", "data/clips.zarr", "test"), batch_size=3))
    assert sum(n for dt, n, _ in moved if dt == torch.int64) == N["test"]
    assert all(d == torch.device("cpu") for *_, d in moved)
