"""The FVD code path of the pipeline with an I3D in the published weight layout (random values: the
real weights cannot be downloaded here, so the numbers mean nothing; the plumbing is what is tested)."""
import numpy as np
import pytest
import torch
import zarr

from videogpt.config import parse
from videogpt.evaluation import compute_real_stats, load_real_stats, real_protocol
from videogpt.metrics.frechet import StatsMismatchError
from videogpt.metrics.i3d import expected_state_keys


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.rand(shape, generator=gen) * 0.1 + (1.0 if k.endswith("running_var") else 0.0)
             for k, shape in expected_state_keys().items()}
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clips.zarr"
    root = zarr.open_group(str(path), mode="w")
    g = root.create_group("test")
    rng = np.random.default_rng(0)
    g.create_array("clips", data=rng.integers(0, 256, (3, 10, 16, 16, 3), dtype=np.uint8), chunks=(1, 10, 16, 16, 3))
    return path


def params(weights, n_real=2, **data):
    return parse({"data": {"resolution": 16, "sequence_length": 10, **data}, "vqvae": {"downsample": [2, 4, 4]},
                  "eval": {"i3d_weights": str(weights), "n_real": n_real, "batch_size": 1}})


def test_real_stats_are_cached_with_their_protocol(weights, clips, tmp_path):
    p = params(weights)
    info = compute_real_stats(p, clips_path=clips, out_dir=tmp_path / "stats")
    assert info["available"] and info["protocol"]["weights_sha256"] and info["protocol"]["n_real"] == 2
    (mu, sigma), reason = load_real_stats(tmp_path / "stats", real_protocol(p, clips))
    assert reason is None and mu.shape == (400,) and sigma.shape == (400, 400) and np.isfinite(sigma).all()
    with pytest.raises(StatsMismatchError, match="n_real"):  # another protocol never reuses the cache
        load_real_stats(tmp_path / "stats", real_protocol(params(weights, n_real=3), clips))


def test_missing_weights_give_a_reason_not_a_crash(clips, tmp_path):
    info = compute_real_stats(params(tmp_path / "nowhere.pt"), clips_path=clips, out_dir=tmp_path / "stats")
    assert not info["available"] and "does not exist" in info["reason"]
    assert load_real_stats(tmp_path / "stats", info["protocol"]) == (None, info["reason"])
