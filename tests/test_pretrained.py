"""Models in one call: save_pretrained -> from_pretrained round trips, the model card, the Hub path (its
download and upload replaced by fakes: both need the network), and the publish command.

The comparison with the sample stage's own output on a real run is in tests/test_pipeline_e2e.py."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch

from pipeline import publish
from videogpt import VQVAE, Prior, VideoGPT
from videogpt.saved import fingerprint, save_model
from videogpt.prior import PriorConfig
from videogpt.vqvae import VQVAEConfig

EVAL = {"fvd": {"value": None, "reason": "no I3D weights: eval.i3d_weights is null", "what": "FD(samples, real)",
                "protocol": {"split": "test", "n_real": 4}},
        "recon": {"nmse": 0.25, "psnr": 21.5, "protocol": {"split": "test", "n": 4}}}
PRIOR_METRICS = {"val_bits_per_dim": 3.25, "steps": 6, "protocol": {"split": "test", "unit": "bits per latent token"}}


def make_model(seed: int = 0, condition: str = "none") -> VideoGPT:
    torch.manual_seed(seed)
    vqvae = VQVAE(VQVAEConfig(input_shape=(4, 8, 8), n_hiddens=12, res_hiddens=6, n_res_layers=1,
                              downsample=(2, 2, 2), n_codes=16, embedding_dim=4))
    vqvae.codebook.embeddings.normal_()       # distinct codes: decoding differs per code
    prior = Prior(PriorConfig(latent_shape=(2, 4, 4), n_codes=16, embedding_dim=4, n_layer=1, n_head=2, n_embd=16,
                              condition=condition, n_classes=3 if condition == "class" else 0),
                  vqvae.codebook.embeddings.detach().clone())
    torch.nn.init.normal_(prior.head.weight)  # a prior that prefers some codes (a zero head is uniform)
    return VideoGPT(vqvae, prior).eval()


def random_videos(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 8, 8, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = make_model()
    folder = model.save_pretrained(tmp_path_factory.mktemp("m") / "videogpt",
                                   metrics={"metrics/eval.json": EVAL, "metrics/prior.json": PRIOR_METRICS})
    return model, folder


def test_round_trip_gives_identical_outputs(saved):
    model, folder = saved
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "prior/config.json", "prior/model.safetensors", "vqvae/config.json", "vqvae/model.safetensors"]
    loaded = VideoGPT.from_pretrained(folder)
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    videos = model.sample(3, seed=5)
    assert videos.dtype == np.uint8 and videos.shape == (3, 4, 8, 8, 3)
    np.testing.assert_array_equal(loaded.sample(3, seed=5), videos)
    assert not np.array_equal(loaded.sample(3, seed=6), videos)             # the seed matters
    real = random_videos(2)
    codes = loaded.encode(real)
    assert codes.dtype == torch.long and codes.shape == (2, 2, 4, 4)
    assert torch.equal(codes, model.encode(real))
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))
    assert loaded.decode(codes).shape == real.shape
    # decode(encode(x)) of a decoded video: the codes are a fixed point of the VQ-VAE's own reconstructions
    assert (model.encode(model.decode(codes)) == codes).float().mean() > 0.5
    # saving again writes the same weights (the prior's record of its VQ-VAE's fingerprint stays true)
    again = loaded.save_pretrained(folder.parent / "again")
    assert fingerprint(again / "vqvae") == fingerprint(folder / "vqvae")
    assert fingerprint(again / "prior") == fingerprint(folder / "prior")


def test_model_card_holds_metrics_and_protocols(saved):
    _, folder = saved
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: videogpt\n")
    assert 'VideoGPT.from_pretrained("' in card and "model.sample(4, seed=0)" in card
    assert "| fvd | null: no I3D weights: eval.i3d_weights is null | FD(samples, real); split=test; n_real=4 |" in card
    assert "| recon.psnr | 21.5 | split=test; n=4 |" in card
    assert "| val_bits_per_dim | 3.25 | split=test; unit=bits per latent token |" in card
    assert "| n_layer | 1 |" in card and "| n_codes | 16 |" in card


def test_vqvae_and_prior_alone(tmp_path):
    model = make_model(seed=3, condition="class")
    vq_dir = model.vqvae.save_pretrained(tmp_path / "vq")
    prior_dir = model.prior.save_pretrained(tmp_path / "prior", metrics={"metrics/prior.json": PRIOR_METRICS})
    vqvae, prior = VQVAE.from_pretrained(vq_dir), Prior.from_pretrained(prior_dir)
    assert vqvae.config == model.vqvae.config and prior.config == model.prior.config
    x = torch.rand(2, 3, 4, 8, 8) - 0.5
    assert torch.equal(vqvae.encode(x), model.vqvae.encode(x))
    tokens = torch.randint(0, 16, (2, 2, 4, 4))
    label = torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(prior(tokens, label), model.prior(tokens, label))
    # the card of a part loads that part; a class-conditional prior samples with labels through VideoGPT
    assert 'Prior.from_pretrained("path/or/hub-id")' in (prior_dir / "README.md").read_text()
    both = VideoGPT(vqvae, prior)
    np.testing.assert_array_equal(both.sample(3, seed=1, label=torch.tensor([0, 1, 2])),
                                  model.sample(3, seed=1, label=torch.tensor([0, 1, 2])))


def test_saved_files_have_default_permissions(saved):
    _, folder = saved
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}
    assert all(m & 0o044 == 0o044 for m in modes.values()), modes     # the weights too (safetensors writes 0600)


def test_local_folders_never_import_the_hub_library(saved, monkeypatch):
    _, folder = saved
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)          # importing it now raises ImportError
    VideoGPT.from_pretrained(folder)
    VQVAE.from_pretrained(folder / "vqvae")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Hub repo id"):
        VideoGPT.from_pretrained(folder.parent / "missing" / "deeper" / "path")


def test_hub_download_and_upload_through_fakes(saved, monkeypatch, tmp_path):
    """The Hub's network calls replaced by fakes: what from_pretrained asks for, and what push_to_hub sends."""
    model, folder = saved
    asked = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = VideoGPT.from_pretrained("someone/videogpt-digits", revision="v1")
    assert asked == {"repo_id": "someone/videogpt-digits", "revision": "v1",
                     "allow_patterns": ["*.json", "*.safetensors", "*.md"]}      # never a pickle
    np.testing.assert_array_equal(loaded.sample(2, seed=0), model.sample(2, seed=0))

    def offline(*a, **kw):
        raise ConnectionError("no network")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="someone/other.*ConnectionError: no network"):
        VideoGPT.from_pretrained("someone/other")

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, repo_id, folder_path, **kw):
            files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
            card = (Path(folder_path) / "README.md").read_text()
            calls.append(("upload_folder", repo_id, files, 'from_pretrained("me/vgpt")' in card, "3.25" in card))
            return "https://huggingface.co/me/vgpt/commit/abc"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = model.push_to_hub("me/vgpt", metrics={"metrics/prior.json": PRIOR_METRICS}, private=True, token="t0k")
    assert url == "https://huggingface.co/me/vgpt/commit/abc"
    assert calls == [("token", "t0k"),
                     ("create_repo", "me/vgpt", {"repo_type": "model", "private": True, "exist_ok": True}),
                     ("upload_folder", "me/vgpt", ["README.md", "prior/config.json", "prior/model.safetensors",
                                                   "vqvae/config.json", "vqvae/model.safetensors"], True, True)]


def test_a_prior_refuses_another_vqvaes_codes():
    a, b = make_model(seed=0), make_model(seed=1)
    with pytest.raises(ValueError, match="another VQ-VAE"):
        VideoGPT(b.vqvae, a.prior)


def test_publish_saves_models_with_the_runs_metrics(tmp_path):
    """pipeline.publish --save-to on a repository layout: models/{vqvae,prior} + metrics/*.json."""
    model = make_model(seed=2)
    save_model(tmp_path / "models/vqvae", model.vqvae, model.vqvae.config, meta={"steps": 6})
    save_model(tmp_path / "models/prior", model.prior, model.prior.config, meta={"steps": 6})
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps(EVAL))
    assert publish.main(["--save-to", str(tmp_path / "out"), "--repo", str(tmp_path)]) == 0
    card = (tmp_path / "out/README.md").read_text()
    assert "From `metrics/eval.json`:" in card and "| recon.nmse | 0.25 | split=test; n=4 |" in card
    assert "metrics/prior.json" not in card                           # absent files are not invented
    assert json.loads((tmp_path / "out/vqvae/config.json").read_text())["meta"] == {"steps": 6}
    np.testing.assert_array_equal(VideoGPT.from_pretrained(tmp_path / "out").sample(2), model.sample(2))
    with pytest.raises(SystemExit):
        publish.main(["--repo", str(tmp_path)])                       # neither a repo id nor --save-to
