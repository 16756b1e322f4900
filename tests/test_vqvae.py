"""VQ-VAE: shapes, same padding, codebook maths (EMA, Laplace smoothing, restarts), losses, training,
save/load, eval-mode immutability, the attention ablation and config validation. Tiny configs only."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from videogpt.config import VQVAEParams
from videogpt.saved import load_model_files, save_model
from videogpt.position import BroadcastPosEmbed as PositionEmbedding
from videogpt.vqvae import (AxialAttention, Codebook, SamePadConv3d, SamePadConvTranspose3d, VQVAE, VQVAEConfig,
                            count_parameters)

torch.set_num_threads(1)


def tiny(input_shape=(4, 8, 8), **kw):
    args = dict(n_hiddens=12, res_hiddens=6, n_res_layers=1, downsample=(2, 2, 2), n_codes=16, embedding_dim=4)
    args.update(kw)
    return VQVAEConfig(input_shape=input_shape, **args)


def video(B, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, *shape, generator=g) - 0.5


# ---------------------------------------------------------------------------------------------
# Shapes and padding


@pytest.mark.parametrize("downsample,input_shape", [
    ((4, 4, 4), (8, 16, 16)), ((4, 2, 2), (8, 8, 8)), ((2, 2, 2), (4, 8, 8)),
    ((1, 2, 2), (2, 8, 8)), ((2, 4, 4), (4, 16, 16)), ((1, 1, 1), (2, 4, 4))])
def test_shapes(downsample, input_shape):
    torch.manual_seed(0)
    model = VQVAE(tiny(input_shape, downsample=downsample))
    latent = tuple(s // d for s, d in zip(input_shape, downsample))
    assert model.latent_shape() == latent == model.config.latent_shape
    x = video(2, input_shape)
    out = model(x)
    assert out["recon"].shape == x.shape
    codes = model.encode(x)
    assert codes.shape == (2, *latent) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < model.config.n_codes
    assert model.embed(codes).shape == (2, *latent, model.config.embedding_dim)
    recon = model.decode(codes)
    assert recon.shape == x.shape and recon.dtype == torch.float32


def test_level_strides_mirror_reference_order():
    assert tiny((16, 64, 64), downsample=(4, 2, 2)).level_strides == [(2, 2, 2), (2, 1, 1)]
    assert tiny((16, 64, 64), downsample=(2, 4, 4)).level_strides == [(2, 2, 2), (1, 2, 2)]
    assert tiny((16, 64, 64), downsample=(1, 1, 1)).level_strides == []


def _reference_pad(kernel, stride):
    """Explicit F.pad argument of the reference: total k - s per axis, ceil at the front (W, H, T order)."""
    pad = []
    for k, s in reversed(list(zip(kernel, stride))):
        p = k - s
        pad += [math.ceil(p / 2), p // 2]
    return pad


@pytest.mark.parametrize("kernel,stride", [(4, (2, 2, 2)), (4, (1, 2, 2)), (4, (2, 1, 1)), (4, 1), (3, 1), (1, 1)])
def test_same_padding_exact_sizes_and_reference_semantics(kernel, stride):
    torch.manual_seed(0)
    s3 = stride if isinstance(stride, tuple) else (stride,) * 3
    x = torch.randn(2, 5, 4, 8, 6)
    conv = SamePadConv3d(5, 7, kernel, stride)
    y = conv(x)
    assert tuple(y.shape[2:]) == tuple(n // s for n, s in zip(x.shape[2:], s3))
    # same numbers as the reference formulation: explicit zero pad, then an unpadded conv
    ref = F.conv3d(F.pad(x, _reference_pad((kernel,) * 3, s3)), conv.conv.weight, conv.conv.bias, s3)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)

    convt = SamePadConvTranspose3d(5, 7, kernel, stride)
    yt = convt(x)
    assert tuple(yt.shape[2:]) == tuple(n * s for n, s in zip(x.shape[2:], s3))
    # reference: the same pad on the input, then a transposed conv with padding k - 1
    ref_t = F.conv_transpose3d(F.pad(x, _reference_pad((kernel,) * 3, s3)), convt.convt.weight, convt.convt.bias,
                               s3, padding=kernel - 1)
    torch.testing.assert_close(yt, ref_t, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Codebook


def _as_z(vectors):
    """(M, D) vectors -> encoder-output layout (1, D, 1, 1, M)."""
    return torch.tensor(vectors, dtype=torch.float32).t()[None, :, None, None, :]


def test_ema_update_and_laplace_smoothing_hand_computed():
    # eps is made large so the smoothing visibly changes the result.
    cb = Codebook(n_codes=3, dim=2, decay=0.9, eps=0.1).train()
    cb.embeddings.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    cb.z_avg.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]))
    cb.N.copy_(torch.tensor([2.0, 2.0, 2.0]))
    cb.initialized.fill_(True)
    cb.needs_init = False  # forward reads this copy of the flag (no host sync)
    z = _as_z([[0.1, 0.0], [0.9, 0.1], [1.1, -0.1], [0.0, 2.0]])  # nearest codes 0, 1, 1, 2
    out = cb(z)
    assert out["codes"].flatten().tolist() == [0, 1, 1, 2]
    # by hand: n = [1, 2, 1]; s = [[0.1, 0], [2.0, 0], [0, 2.0]]
    N = [0.9 * 2 + 0.1 * 1, 0.9 * 2 + 0.1 * 2, 0.9 * 2 + 0.1 * 1]             # [1.9, 2.0, 1.9]
    z_avg = [[0.9 * 0 + 0.1 * 0.1, 0.0], [0.9 * 2 + 0.1 * 2.0, 0.0], [0.0, 0.9 * 2 + 0.1 * 2.0]]
    n_tot = sum(N)                                                            # 5.8
    N_s = [(n + 0.1) / (n_tot + 3 * 0.1) * n_tot for n in N]                  # Laplace smoothing
    expected = [[z_avg[k][d] / N_s[k] for d in range(2)] for k in range(3)]
    torch.testing.assert_close(cb.N, torch.tensor(N), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cb.z_avg, torch.tensor(z_avg), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cb.embeddings, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    # the output is quantised with the codebook BEFORE this step's update
    torch.testing.assert_close(out["quantized"][0, :, 0, 0, :].t(),
                               torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    # perplexity of the batch frequencies p = [1/4, 1/2, 1/4]
    p = torch.tensor([0.25, 0.5, 0.25])
    torch.testing.assert_close(out["perplexity"], torch.exp(-(p * torch.log(p + 1e-10)).sum()))
    assert cb.usage() == 1.0


def test_dead_code_restarted_from_batch_and_stats_not_reset():
    torch.manual_seed(0)
    cb = Codebook(n_codes=4, dim=2, decay=0.9).train()
    cb.embeddings.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]))
    cb.z_avg.copy_(cb.embeddings * 5)
    cb.N.copy_(torch.tensor([5.0, 5.0, 5.0, 0.0]))  # code 3: dead
    cb.initialized.fill_(True)
    cb.needs_init = False  # forward reads this copy of the flag (no host sync)
    vectors = [[0.1, 0.0], [0.9, 0.1], [0.0, 0.8], [0.2, 0.1], [1.2, 0.0], [0.1, 1.1]]  # M=6 >= K: no noise
    cb(_as_z(vectors))
    batch = torch.tensor(vectors)
    restarted = cb.embeddings[3]
    assert (batch - restarted).abs().sum(1).min() == 0, "dead code must become one of the batch vectors"
    assert cb.N[3] == 0.0 and torch.equal(cb.z_avg[3], torch.tensor([450.0, 450.0]))  # 0.9 * 500, not reset
    for k in range(3):  # live codes keep their EMA value
        torch.testing.assert_close(cb.embeddings[k], cb.z_avg[k] / cb.N[k], rtol=1e-5, atol=1e-6)
    assert cb.usage() == 0.75


def test_data_dependent_init_and_tiling():
    torch.manual_seed(0)
    # decay 1 freezes the EMA, so after the first training step the codes are exactly the init rows
    cb = Codebook(n_codes=8, dim=4, decay=1.0).train()
    z = torch.randn(2, 4, 2, 2, 4)                        # M = 32 vectors >= K
    cb(z)
    assert bool(cb.initialized) and torch.equal(cb.N, torch.ones(8))
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    d = (cb.embeddings[:, None, :] - flat[None, :, :]).abs().amax(-1)  # (K, M) max-abs distances
    assert torch.all(d.min(1).values < 1e-6)
    assert len(set(d.argmin(1).tolist())) == 8             # drawn without replacement
    # fewer vectors than codes: tiled, with small noise (std 0.01/sqrt(D)) so the copies differ
    cb2 = Codebook(n_codes=8, dim=4, decay=1.0).train()
    z2 = torch.randn(1, 4, 1, 1, 3)
    cb2(z2)
    flat2 = z2.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    d2 = (cb2.embeddings[:, None, :] - flat2[None, :, :]).abs().amax(-1).min(1).values
    assert torch.all(d2 < 0.05) and torch.all(d2 > 0)  # noise std 0.005 per element
    assert torch.unique(cb2.embeddings, dim=0).shape[0] == 8


# ---------------------------------------------------------------------------------------------
# Losses and gradients


def test_straight_through_gives_encoder_gradients_from_recon_loss():
    torch.manual_seed(0)
    model = VQVAE(tiny()).train()
    out = model(video(2, (4, 8, 8)))
    out["recon_loss"].backward()
    for name in ("down.0.conv.weight", "conv_last.conv.weight", "to_latent.conv.weight"):
        grad = dict(model.encoder.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_losses_by_hand():
    torch.manual_seed(0)
    model = VQVAE(tiny(beta=0.5))
    x = video(2, (4, 8, 8))
    model.train()(x)  # initialise the codebook
    model.eval()
    out = model(x)
    z = model.encode_latents(x)
    e = model.embed(model.encode(x)).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(out["commitment_loss"], 0.5 * ((z - e) ** 2).mean())
    assert out["commitment_loss"] > 0
    torch.testing.assert_close(out["recon_loss"], ((out["recon"] - x) ** 2).mean() / 0.06)
    torch.testing.assert_close(out["loss"], out["recon_loss"] + out["commitment_loss"])
    torch.testing.assert_close(out["recon"], model.decode(model.encode(x)))
    # the commitment term pulls the encoder (not the codebook: buffers only)
    model.zero_grad()
    out["commitment_loss"].backward()
    assert model.encoder.to_latent.conv.weight.grad.abs().sum() > 0
    assert all(b.grad is None for b in model.codebook.buffers())


def test_training_lowers_loss():
    torch.manual_seed(0)
    cfg = tiny((4, 8, 8), n_hiddens=16, res_hiddens=8, downsample=(1, 2, 2), n_codes=32, embedding_dim=8)
    model = VQVAE(cfg).train()
    # a fixed set of smooth clips (blobs drifting over time)
    t, yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(8.0), torch.arange(8.0), indexing="ij")
    clips = []
    for i in range(8):
        cy, cx = 2 + i % 4, 2 + (i * 3) % 5 + 0.5 * t
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
        clips.append(torch.stack([blob, blob * (i % 2), 1 - blob]) - 0.5)
    x = torch.stack(clips)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


# ---------------------------------------------------------------------------------------------
# State: save/load, eval mode, autocast


def test_save_load_reproduces_codes(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    model = VQVAE(cfg).train()
    x = video(3, cfg.input_shape)
    for _ in range(2):
        model(x)
    model.eval()
    save_model(tmp_path, model, cfg, {"step": 2})
    cfg_dict, state, meta = load_model_files(tmp_path)
    fresh = VQVAE(VQVAEConfig(**cfg_dict))
    assert fresh.config == cfg and not bool(fresh.codebook.initialized)
    fresh.load_state_dict(state)
    fresh.eval()
    assert bool(fresh.codebook.initialized)
    assert torch.equal(fresh.encode(x), model.encode(x))
    assert torch.equal(fresh.decode(model.encode(x)), model.decode(model.encode(x)))
    # a loaded model put back in train mode must not re-initialise its codebook
    # (a re-init would reset N to 1 before the EMA step: sum(N) would be 0.99 * K + 0.01 * M)
    n_loaded = fresh.codebook.N.sum().item()
    fresh.train()(x[:1])
    M = math.prod(cfg.latent_shape)
    assert abs(fresh.codebook.N.sum().item() - (0.99 * n_loaded + 0.01 * M)) < 1e-4
    assert abs(n_loaded - cfg.n_codes) > 0.5


def test_eval_never_changes_state():
    torch.manual_seed(0)
    model = VQVAE(tiny())
    x = video(2, (4, 8, 8))
    # an uninitialised codebook is not initialised by eval calls
    model.eval()
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    model(x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in init_state.items())
    model.train()(x)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(x)
        model.decode(model.encode(x))
    for k, v in state.items():  # codebook buffers and BatchNorm statistics bitwise equal
        assert torch.equal(v, model.state_dict()[k]), k


def test_bf16_autocast_keeps_quantiser_in_float32():
    torch.manual_seed(0)
    model = VQVAE(tiny()).train()
    x = video(2, (4, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out["commitment_loss"].dtype == torch.float32 and out["perplexity"].dtype == torch.float32
    assert all(b.dtype == torch.float32 for n, b in model.codebook.named_buffers() if n != "initialized")
    assert torch.isfinite(out["loss"])


# ---------------------------------------------------------------------------------------------
# Attention and position embedding


def test_attention_false_has_no_attention_params():
    with_attn = VQVAE(tiny())
    without = VQVAE(tiny(attention=False))
    names = [n for n, _ in without.named_parameters()]
    assert without.pos_embed is None
    assert not any("attn" in n or "pos_embed" in n for n in names)
    assert any("attn" in n for n, _ in with_attn.named_parameters())
    assert count_parameters(without) < count_parameters(with_attn)
    x = video(2, (4, 8, 8))
    out = without.train()(x)
    assert out["recon"].shape == x.shape and torch.isfinite(out["loss"])


def test_axial_attention_is_three_separate_attentions_summed():
    """The fused computation (one q|k|v matmul, one output matmul over the concatenated axes) equals the
    definition: per axis, its own q|k|v projection, softmax attention along that axis only, its own output
    projection; the three summed. Values and gradients, on a grid with three different axis lengths."""
    torch.manual_seed(0)
    attn = AxialAttention(12, 2)
    for lin in attn.out:
        torch.nn.init.normal_(lin.bias)
    x = torch.randn(2, 3, 4, 5, 12, requires_grad=True)

    def by_definition(x):
        out = 0
        for i, axis in enumerate((1, 2, 3)):
            q, k, v = attn.qkv[i](x).chunk(3, dim=-1)
            heads = [z.movedim(axis, -2).unflatten(-1, (2, 6)).transpose(-2, -3) for z in (q, k, v)]
            a = (heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(6)).softmax(-1) @ heads[2]
            out = out + attn.out[i](a.transpose(-2, -3).flatten(-2).movedim(-2, axis))
        return out

    fused, ref = attn(x), by_definition(x)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    params = [x, *attn.parameters()]
    for a, b in zip(torch.autograd.grad(fused.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_position_embedding_is_one_module_shared_by_encoder_and_decoder():
    torch.manual_seed(0)
    cfg = tiny(n_res_layers=2)
    model = VQVAE(cfg).eval()
    assert sum(isinstance(m, PositionEmbedding) for m in model.modules()) == 1
    pos_params = [n for n, _ in model.named_parameters() if n.startswith("pos_embed.")]
    assert len(pos_params) == 3
    assert not any("pos" in n for n, _ in model.encoder.named_parameters())
    assert not any("pos" in n for n, _ in model.decoder.named_parameters())
    # widths split n_hiddens over the axes (12 -> 4/4/4); tables sized by the latent shape
    assert [tuple(p.shape) for p in model.pos_embed.tables] == [(2, 4), (4, 4), (4, 4)]
    assert [p.shape[1] for p in PositionEmbedding((2, 3, 4), 64).tables] == [22, 21, 21]
    # both the encoder and the decoder actually use it
    model.encode_latents(video(2, cfg.input_shape)).square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.pos_embed.tables)
    model.zero_grad()
    model.decode_latents(torch.randn(2, cfg.embedding_dim, *cfg.latent_shape)).square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.pos_embed.tables)


# ---------------------------------------------------------------------------------------------
# Config


def test_config_field_names_match_params_schema():
    params = VQVAEParams()
    fields = {f.name for f in dataclasses.fields(VQVAEConfig)}
    overlap = {k: v for k, v in dataclasses.asdict(params).items() if k in fields}
    assert set(overlap) == {"n_hiddens", "res_hiddens", "n_res_layers", "downsample", "n_codes", "embedding_dim",
                            "attention", "n_heads", "beta", "ema_decay", "n_codebooks"}
    cfg = VQVAEConfig(input_shape=(16, 32, 32), **overlap)  # the default clips
    assert cfg.latent_shape == (4, 8, 8)


@pytest.mark.parametrize("kw,name", [
    (dict(downsample=(3, 2, 2)), "vqvae.downsample"),
    (dict(input_shape=(6, 8, 8), downsample=(4, 2, 2)), "data.sequence_length"),
    (dict(input_shape=(4, 12, 8), downsample=(2, 8, 2)), "data.resolution"),
    (dict(input_shape=(4, 8, 6), downsample=(2, 2, 4)), "data.resolution"),
    (dict(n_codes=1), "vqvae.n_codes"),
    (dict(n_hiddens=13, n_heads=2), "vqvae.n_hiddens"),
])
def test_invalid_config_names_parameter(kw, name):
    args = dict(input_shape=(4, 8, 8))
    args.update(kw)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        tiny(**args)


def test_bad_input_is_a_clear_error():
    model = VQVAE(tiny())
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        model(torch.zeros(1, 3, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model.encode(torch.zeros(1, 1, 4, 8, 8))


def test_flops_estimate():
    model = VQVAE(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fwd, train = model.flops_per_clip(backward=False), model.flops_per_clip()
    assert fwd > 0 and 2 * fwd < train < 4 * fwd
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_paper_sizes_and_parameter_count_matches_reference():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for ds, shape in [((4, 4, 4), (16, 128, 128)), ((4, 2, 2), (16, 64, 64)), ((2, 2, 2), (16, 64, 64)),
                          ((2, 4, 4), (16, 128, 128))]:
            model = VQVAE(VQVAEConfig(input_shape=shape, downsample=ds, n_codes=2048))
            assert model.latent_shape() in {(4, 32, 32), (8, 32, 32)}
            assert model.codebook.embeddings.shape == (2048, 256)
        # The public reference (21,141,619 trainable at 16x64x64, ds 4x2x2) differs by: residual width 120
        # (C/2), no position embedding, and a 1x1x1 instead of a 3x3x3 decoder input conv (256 -> 240).
        model = VQVAE(VQVAEConfig(input_shape=(16, 64, 64), downsample=(4, 2, 2), res_hiddens=120))
        n = count_parameters(model) - count_parameters(model.pos_embed) - (27 - 1) * 256 * 240
        assert n == 21_141_619
