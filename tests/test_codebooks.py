"""Multiple codebooks (vqvae.n_codebooks, the paper's Table 7): the channel-wise split and per-codebook quantisation
against a hand computation, the averaged perplexity, the prior's fourth latent axis, one codebook leaving the model's
files as they were, and n_codebooks = 2 through train -> tokenize -> prior -> sample -> evaluate on tiny data."""
import hashlib
import json
import math

import numpy as np
import pytest
import torch
import zarr

from pipeline import paper, tables
from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import DefaultDataParams, VQVAEParams, parse, to_dict
from videogpt.data.clip_store import build_clip_store
from videogpt.data.moving_digits import write_moving_digits
from videogpt.evaluation import compute_real_stats, evaluate
from videogpt.generate import read_samples, run_sample_stage
from videogpt.prior import Prior, PriorConfig
from videogpt.data.clip_store import read_clips
from videogpt.sampling import sample_tokens, sample_tokens_recompute, sample_tokens_sliding, tokens_to_videos
from videogpt.saved import fingerprint, load_model_files, save_model
from videogpt.tokens import build_token_store
from videogpt.training import run_key_section, train_prior, train_vqvae
from videogpt.video import to_float
from videogpt.vqvae import VQVAE, Codebook, VQVAEConfig, codebook_counts, mean_perplexity

D, K = 2, 3
# codebook 0 and codebook 1, hand-picked so every test vector below has one clearly nearest code
BOOKS = torch.tensor([[[0., 0.], [1., 0.], [0., 1.]],
                      [[2., 2.], [-1., -1.], [5., 0.]]])


def tiny(n_codebooks: int, **kw) -> VQVAEConfig:
    return VQVAEConfig(**{**dict(input_shape=(4, 8, 8), n_hiddens=8, res_hiddens=4, n_res_layers=1,
                                 downsample=(2, 4, 4), n_codes=K, embedding_dim=D, n_codebooks=n_codebooks), **kw})


def with_books(model: VQVAE) -> VQVAE:
    for cb, book in zip(model.codebooks, BOOKS):
        cb.load_state_dict({"embeddings": book, "N": torch.ones(K), "z_avg": book, "initialized": torch.tensor(True)})
    return model.eval()


# ---- the quantiser ---------------------------------------------------------------------------

def test_latent_channels_are_split_and_each_slice_quantised_by_its_own_codebook():
    model = with_books(VQVAE(tiny(2)))
    assert model.encoder.to_latent.conv.out_channels == 2 * D and model.decoder.from_latent.conv.in_channels == 2 * D
    # z (B=1, C*D=4, t=2, h=1, w=2): 4 positions; channels 0-1 go to codebook 0, channels 2-3 to codebook 1
    pos0 = [[0.9, 0.1], [0.1, 0.2], [0.2, 0.8], [1.2, -0.1]]     # -> codes 1, 0, 2, 1 of codebook 0
    pos1 = [[1.9, 2.2], [4.0, 0.3], [-0.7, -1.2], [2.1, 1.8]]    # -> codes 0, 2, 1, 0 of codebook 1
    z = torch.tensor([a + b for a, b in zip(pos0, pos1)]).T.reshape(1, 4, 2, 1, 2)
    out = model.quantize(z)
    assert out["codes"].shape == (1, 2, 1, 2, 2)
    assert out["codes"].reshape(4, 2).T.tolist() == [[1, 0, 2, 1], [0, 2, 1, 0]]
    expected = torch.cat([BOOKS[0][[1, 0, 2, 1]], BOOKS[1][[0, 2, 1, 0]]], 1)  # (4 positions, C*D)
    torch.testing.assert_close(out["quantized"].permute(0, 2, 3, 4, 1).reshape(4, 4), expected)
    # commitment: the mean over all C*D channels of (z - e)^2
    zs = torch.tensor([a + b for a, b in zip(pos0, pos1)])
    torch.testing.assert_close(out["commitment"], ((zs - expected) ** 2).mean())
    # perplexity: codebook 0 uses codes {1: 2, 0: 1, 2: 1}, codebook 1 {0: 2, 2: 1, 1: 1}: both exp(H(.5, .25, .25))
    ppl = math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert out["perplexity"].item() == pytest.approx(ppl, rel=1e-6)
    # encode / embed / decode agree with the forward quantisation
    x = torch.rand(2, 3, 4, 8, 8) - 0.5
    codes = model.encode(x)
    assert codes.shape == (2, 2, 2, 2, 2) and codes.max() < K
    with torch.no_grad():
        vq = model.quantize(model.encode_latents(x))
        assert torch.equal(vq["codes"], codes)
        emb = model.embed(codes)  # (B, t, h, w, C*D): codebook c's vector in channels [cD, (c+1)D)
        assert torch.equal(emb[..., :D], BOOKS[0][codes[..., 0]]) and torch.equal(emb[..., D:], BOOKS[1][codes[..., 1]])
        torch.testing.assert_close(model.decode(codes), model.decode_latents(vq["quantized"]))
    assert torch.equal(model.code_table(), BOOKS.reshape(2 * K, D))


def test_perplexity_is_averaged_over_codebooks():
    counts = torch.tensor([[2., 2., 0.], [4., 0., 0.]])  # perplexities 2 and 1
    assert mean_perplexity(counts).item() == pytest.approx(1.5, abs=1e-6)
    codes = torch.tensor([[0, 1], [1, 1], [0, 1], [1, 1]]).view(1, 2, 2, 2)  # (..., C=2)
    assert codebook_counts(codes, K, 2).tolist() == [[2, 2, 0], [0, 4, 0]]


def test_each_codebook_has_its_own_data_dependent_init_ema_and_restarts():
    """Two training steps of the model's quantiser == two standalone Codebooks fed the slices in order."""
    model = VQVAE(tiny(2, n_codes=4)).train()
    refs = [Codebook(4, D, model.config.ema_decay).train() for _ in range(2)]
    for ref, cb in zip(refs, model.codebooks):
        ref.load_state_dict(cb.state_dict())
    zs = [torch.randn(2, 2 * D, 2, 2, 2, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for step, z in enumerate(zs):
        torch.manual_seed(step)
        out = model.quantize(z)
        torch.manual_seed(step)
        parts = [ref(z[:, c * D:(c + 1) * D]) for c, ref in enumerate(refs)]
        assert torch.equal(out["codes"], torch.stack([p["codes"] for p in parts], -1))
        assert torch.equal(out["quantized"], torch.cat([p["quantized"] for p in parts], 1))
        assert out["perplexity"] == (parts[0]["perplexity"] + parts[1]["perplexity"]) / 2
        for ref, cb in zip(refs, model.codebooks):
            assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), cb.state_dict().values()))
    # each EMA counted its own slice's 16 vectors per step; the codebooks started from different data
    for cb in model.codebooks:
        assert cb.N.sum().item() == pytest.approx(4 * 0.99 ** 2 + 16 * 0.01 * (1 + 0.99), rel=1e-5)
    assert not torch.equal(model.codebooks[0].embeddings, model.codebooks[1].embeddings)


# ---- the prior over (t, h, w, C) -----------------------------------------------------------------

def test_prior_embeds_each_code_from_its_own_codebook_and_has_four_position_axes():
    vq = with_books(VQVAE(tiny(2)))
    cfg = PriorConfig(latent_shape=vq.config.latent_shape, n_codes=K, embedding_dim=D, n_layer=1, n_head=2, n_embd=8,
                      dropout=0.0, attn_dropout=0.0)
    assert cfg.latent_shape == (2, 2, 2, 2) and cfg.seq_len == 16 and cfg.n_codebooks == 2
    torch.manual_seed(0)
    prior = Prior(cfg, vq.code_table()).eval()
    prior.check_codebook(vq)
    assert [tuple(t.shape) for t in prior.pos_emb.tables] == [(2, 2), (2, 2), (2, 2), (2, 2)]
    torch.nn.init.normal_(prior.head.weight)  # a non-uniform prior, so sampling exercises the embeddings
    tokens = torch.randint(0, K, (3, 2, 2, 2, 2), generator=torch.Generator().manual_seed(1))
    seen = []
    handle = prior.fc_in.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    prior(tokens)
    handle.remove()
    flat = tokens.reshape(3, 16)
    codebook_of = torch.arange(16) % 2  # the codebook axis is the last, the fastest in raster order
    assert torch.equal(seen[0], BOOKS[codebook_of, flat])
    # the decode step, prefill and the full forward pass agree: cached sampling == the recompute loop
    kw = dict(seed=3, batch_size=2, compile=False)
    cached = sample_tokens(prior, 3, **kw)
    assert cached.shape == (3, 2, 2, 2, 2)
    assert torch.equal(cached, sample_tokens_recompute(prior, 3, seed=3, batch_size=2))
    # the sliding window (prefill of the kept latent frames) keeps the codebook axis; its first window = one pass
    long = sample_tokens_sliding(prior, 3, 3, vqvae=vq, **kw)
    assert long.shape == (3, 3, 2, 2, 2) and torch.equal(long[:, :2], cached)


# ---- one codebook: the files of before ----------------------------------------------------------

def _layout(state: dict) -> str:
    text = "\n".join(f"{n}:{tuple(v.shape)}:{v.dtype}" for n, v in state.items())
    return hashlib.sha256(text.encode()).hexdigest()


def test_one_codebook_keeps_the_state_dict_config_file_and_run_key_of_before(tmp_path):
    p = parse({})
    cfg = VQVAEConfig.from_params(p.vqvae, (16, 32, 32))
    assert p.vqvae.n_codebooks == 1 and cfg.latent_shape == (4, 8, 8)
    model = VQVAE(cfg)
    # key names, shapes and dtypes of the default VQ-VAE and prior as the code before n_codebooks saved them
    assert _layout(model.state_dict()) == "826662ccd4c46f02d222db7cfadb66b551e62d8c7eb6b8fc5ffa337eb906c0d5"
    prior = Prior(PriorConfig.from_params(p.prior, cfg, n_classes=0, frame_shape=(32, 32)), model.code_table())
    assert _layout(prior.state_dict()) == "28131bb4147de3c6bae2156960ff3665ad8183b5f83a15b525014244a1463978"
    save_model(tmp_path / "one", model, cfg)
    saved, _, _ = load_model_files(tmp_path / "one")
    assert "n_codebooks" not in saved and VQVAEConfig(**saved) == cfg  # config.json as before; loads back as 1
    save_model(tmp_path / "two", VQVAE(tiny(2)), tiny(2))
    assert load_model_files(tmp_path / "two")[0]["n_codebooks"] == 2
    assert "n_codebooks" not in run_key_section(VQVAEParams())
    assert run_key_section(VQVAEParams(n_codebooks=2))["n_codebooks"] == 2
    # the one-codebook quantiser is the Codebook itself: same outputs, same buffers, same random draws
    z = torch.randn(2, cfg.embedding_dim, 4, 8, 8)
    a, b = VQVAE(cfg).train(), VQVAE(cfg).train()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(5)
    out_a = a.quantize(z)
    torch.manual_seed(5)
    out_b = b.codebook(z)
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- end to end ------------------------------------------------------------------------------

def test_two_codebooks_train_tokenize_sample_and_evaluate(tmp_path):
    raw = to_dict(parse({}))
    sections = {
        "default_data": {"n_train": 12, "n_test": 4, "resolution": 32, "n_frames": 8, "digit_size": 14},
        "data": {"source": str(tmp_path / "videos"), "resolution": 16, "sequence_length": 4, "num_workers": 1},
        "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [2, 4, 4], "n_codes": 16,
                  "embedding_dim": 8, "n_codebooks": 2, "max_steps": 6, "batch_size": 4, "checkpoint_every": 3,
                  "val_every": 3},
        "tokenize": {"batch_size": 8},
        "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_steps": 6, "warmup_steps": 0, "batch_size": 4,
                  "checkpoint_every": 3, "val_every": 3},
        "sample": {"n_samples": 2, "batch_size": 2},
        "eval": {"n_real": 4, "batch_size": 2},
        "trainer": {"accelerator": "cpu", "log_every_n_steps": 2},
    }
    for name, values in sections.items():
        raw[name].update(values)
    params = parse(raw)
    write_moving_digits(tmp_path / "videos", DefaultDataParams(**sections["default_data"]))
    clips, manifest, out = tmp_path / "clips.zarr", tmp_path / "manifest.csv", tmp_path
    build_clip_store(params.data, clips, manifest, out / "rejected.csv", progress=False)
    compute_real_stats(params, clips_path=clips, out_dir=out / "stats")
    train_vqvae(params, clips_path=clips, manifest_path=manifest, model_dir=out / "vqvae", ckpt_dir=out / "ckpt_v",
                live_dir=out / "live_v", metrics_path=out / "vqvae.json", picture_path=out / "vqvae.png")
    vqvae = load_vqvae(out / "vqvae")  # from_pretrained round trip: two codebooks, both trained
    assert vqvae.config.n_codebooks == 2 and len(vqvae.codebooks) == 2
    assert all(bool(cb.initialized) for cb in vqvae.codebooks)
    assert not torch.equal(vqvae.codebooks[0].embeddings, vqvae.codebooks[1].embeddings)
    vq_metrics = json.loads((out / "vqvae.json").read_text())
    assert 1 <= vq_metrics["perplexity"] <= 16 and vq_metrics["steps"] == 6

    build_token_store(vqvae, clips, out / "tokens.zarr", fingerprint=fingerprint(out / "vqvae"), progress=False)
    tokens = zarr.open_group(str(out / "tokens.zarr"), mode="r")
    train_tokens = tokens["train"]["tokens"]
    assert train_tokens.shape[1:] == (2, 4, 4, 2) and train_tokens.dtype == np.uint8
    assert tokens.attrs["latent_shape"] == [2, 4, 4, 2]
    assert train_tokens.metadata.dimension_names == ("clip", "t", "h", "w", "codebook")
    first = torch.as_tensor(np.asarray(train_tokens[:2]), dtype=torch.long)
    assert torch.equal(vqvae.encode(to_float(torch.from_numpy(read_clips(clips, "train", 0, 2)))), first)

    train_prior(params, vqvae_dir=out / "vqvae", tokens_path=out / "tokens.zarr", clips_path=clips,
                model_dir=out / "prior", ckpt_dir=out / "ckpt_p", live_dir=out / "live_p",
                metrics_path=out / "prior.json")
    prior, _ = load_prior(out / "prior", vqvae)
    assert prior.config.latent_shape == (2, 4, 4, 2) and len(prior.pos_emb.tables) == 4
    assert 0 < json.loads((out / "prior.json").read_text())["val_bits_per_dim"] < math.log2(16) + 1

    run_sample_stage(params, prior_dir=out / "prior", vqvae_dir=out / "vqvae", clips_path=clips,
                     manifest_path=manifest, indices_path=out / "stats/indices.json", out_dir=out / "samples")
    samples = read_samples(out / "samples")
    assert samples.tokens.shape == (4, 2, 4, 4, 2)
    videos = zarr.open_group(str(out / "samples/samples.zarr"), mode="r")["videos"]
    assert videos.shape == (4, 4, 16, 16, 3)
    # the videos are the sampled (t, h, w, C) codes decoded (the stage's batch of 2)
    decoded = tokens_to_videos(vqvae, torch.as_tensor(np.asarray(samples.tokens[:2]), dtype=torch.long), 2)
    assert np.array_equal(np.asarray(videos[:2]), decoded)

    report = evaluate(params, clips_path=clips, tokens_path=out / "tokens.zarr", vqvae_dir=out / "vqvae",
                      prior_dir=out / "prior", samples_dir=out / "samples", stats_dir=out / "stats")
    assert math.isfinite(report["test_bits_per_dim"]["value"]) and report["recon"]["nmse"]["mean"] > 0


# ---- the paper's Table 7 -------------------------------------------------------------------------

def test_codebooks_grid_holds_total_latents_and_labels_rows_as_the_paper():
    key = tables.TABLES["codebooks"].key
    old = {"data": {"sequence_length": 16, "resolution": 32}, "vqvae": {"downsample": [4, 4, 4]}}
    assert key(old) == ((0, 1), "4 × 8 × 8 × 1")  # an experiment from before the key: one codebook
    for scale, (frames, res), total in (("mini", (16, 32), 256), ("paper", (16, 64), 8192)):
        grid = paper.GRIDS["codebooks"][scale]
        labels = [key({"data": {"sequence_length": frames, "resolution": res},
                       "vqvae": {"downsample": row["vqvae.downsample"], "n_codebooks": row["vqvae.n_codebooks"]}})[1]
                  for row in grid.rows]
        assert {math.prod(int(n) for n in label.split(" × ")) for label in labels} == {total}, scale
        for row in grid.rows:  # every row is a valid model on its clips
            VQVAEConfig(input_shape=(frames, res, res), downsample=row["vqvae.downsample"],
                        n_codebooks=row["vqvae.n_codebooks"])
    assert labels == [label for label, _ in paper.PAPER["codebooks"]]  # the paper's rows, on the bair preset
    assert grid.preset == "bair"
