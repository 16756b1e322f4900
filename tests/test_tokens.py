"""The token store: dtype, identical output for any worker count, resume after interruption, fingerprint."""
import numpy as np
import pytest
import torch
import zarr

from videogpt import tokens as tokens_mod
from videogpt.tokens import TokenDataset, build_token_store, open_token_store, token_dtype
from videogpt.vqvae import VQVAE, VQVAEConfig


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clips.zarr"
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({"class_names": ["a", "b"], "counts": {"train": 10, "test": 6}})
    for split, n in (("train", 10), ("test", 6)):
        g = root.create_group(split)
        g.create_array("clips", data=rng.integers(0, 256, (n, 4, 16, 16, 3), dtype=np.uint8), chunks=(1, 4, 16, 16, 3))
        g.create_array("labels", data=(np.arange(n) % 2).astype(np.int32))
    return path


@pytest.fixture(scope="module")
def vqvae():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1,
                              downsample=(2, 4, 4), n_codes=300, embedding_dim=8))
    model.train()
    model(torch.rand(8, 3, 4, 16, 16) - 0.5)  # data-dependent codebook init
    return model.eval()


def read(path, split="train"):
    return zarr.open_group(str(path), mode="r")[split]["tokens"][:]


def test_dtype_is_the_smallest_that_holds_the_codes():
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16 and token_dtype(70000) == np.uint32


def test_tokens_equal_encode_and_decode_to_the_reconstructions(clip_store, vqvae, tmp_path):
    out = tmp_path / "tokens.zarr"
    build_token_store(vqvae, clip_store, out, fingerprint="fp", batch_size=4, progress=False)
    toks = read(out)
    assert toks.dtype == np.uint16 and toks.shape == (10, 2, 4, 4)
    clips = torch.from_numpy(zarr.open_group(str(clip_store), mode="r")["train"]["clips"][:])
    video = clips.permute(0, 4, 1, 2, 3).float() / 255 - 0.5
    with torch.no_grad():
        np.testing.assert_array_equal(toks, vqvae.encode(video).numpy())
        recon = vqvae.decode(vqvae.encode(video))
        torch.testing.assert_close(vqvae.decode(torch.from_numpy(toks.astype(np.int64))), recon)
    assert not (tmp_path / "tokens.zarr.tmp").exists()
    root = open_token_store(out, expect_fingerprint="fp")
    assert root.attrs["latent_shape"] == [2, 4, 4] and root.attrs["class_names"] == ["a", "b"]
    with pytest.raises(ValueError, match="different VQ-VAE"):
        open_token_store(out, expect_fingerprint="other")


def test_two_dataloader_workers_give_the_same_store(clip_store, vqvae, tmp_path):
    build_token_store(vqvae, clip_store, tmp_path / "w0.zarr", fingerprint="fp", batch_size=4, progress=False)
    build_token_store(vqvae, clip_store, tmp_path / "w2.zarr", fingerprint="fp", batch_size=4, num_workers=2,
                      progress=False)
    for split in ("train", "test"):
        np.testing.assert_array_equal(read(tmp_path / "w0.zarr", split), read(tmp_path / "w2.zarr", split))


def test_interrupted_run_resumes_and_matches(clip_store, vqvae, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tokens_mod, "BLOCK", 4)  # 3 train blocks + 2 test blocks
    build_token_store(vqvae, clip_store, tmp_path / "ref.zarr", fingerprint="fp", batch_size=4, progress=False)

    calls = {"n": 0}
    encode = vqvae.encode

    def crash_after_two_blocks(x):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third block
        return encode(x)

    monkeypatch.setattr(vqvae, "encode", crash_after_two_blocks)
    out = tmp_path / "tokens.zarr"
    with pytest.raises(KeyboardInterrupt):
        build_token_store(vqvae, clip_store, out, fingerprint="fp", batch_size=4, progress=False)
    assert not out.exists() and (tmp_path / "tokens.zarr.tmp").exists()  # nothing looks complete
    monkeypatch.setattr(vqvae, "encode", encode)
    capsys.readouterr()
    build_token_store(vqvae, clip_store, out, fingerprint="fp", batch_size=4, progress=False)
    assert "2 finished block(s) skipped" in capsys.readouterr().out
    for split in ("train", "test"):
        np.testing.assert_array_equal(read(out, split), read(tmp_path / "ref.zarr", split))


def test_token_dataset_items(clip_store, vqvae, tmp_path):
    out = tmp_path / "tokens.zarr"
    build_token_store(vqvae, clip_store, out, fingerprint="fp", batch_size=4, progress=False)
    ds = TokenDataset(out, "test", with_label=True, n_cond_frames=1, clips_path=clip_store)
    item = ds[3]
    assert item["tokens"].dtype == torch.long and item["tokens"].shape == (2, 4, 4)
    assert int(item["label"]) == 1 and item["frames"].shape == (3, 1, 16, 16)
    assert -0.5 <= float(item["frames"].min()) and float(item["frames"].max()) <= 0.5
