"""The GPT prior: shapes, causality, position embedding, conditioning, learning, incremental decoding."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import torch.nn.functional as F

from videogpt.position import split_width
from videogpt.prior import Norm, Prior, PriorConfig, causal_attention_with_dropout, dropout_keep_mask

LATENT = (2, 3, 4)  # L = 24
K, D_CB = 16, 8
FRAMES = (8, 8)
ACTIONS = (4, 2)  # frames per clip, values per action


def make_prior(condition="none", seed=0, random_head=False, **overrides):
    """A tiny prior. random_head: replace the zero-initialised head, so logits depend on the input."""
    torch.manual_seed(seed)
    kw = dict(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, n_layer=2, n_head=2, n_embd=20,
              dropout=0.0, attn_dropout=0.0, condition=condition, n_classes=3, n_cond_frames=1,
              frame_shape=FRAMES, action_shape=ACTIONS, resnet_depth=18, resnet_dim=12, resnet_width=4)
    kw.update(overrides)
    prior = Prior(PriorConfig(**kw), torch.randn(kw["n_codes"], kw["embedding_dim"]))
    if random_head:
        torch.nn.init.normal_(prior.head.weight, std=1.0)
    return prior


def cond_inputs(condition, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    cond = {}
    if condition == "class":
        cond["label"] = torch.randint(0, 3, (batch,), generator=g)
    if "frames" in condition:
        cond["frames"] = torch.rand(batch, 3, 1, *FRAMES, generator=g) - 0.5
    if "actions" in condition:
        cond["actions"] = torch.randn(batch, *ACTIONS, generator=g)
    return cond


def random_tokens(batch, seed=2):
    return torch.randint(0, K, (batch, *LATENT), generator=torch.Generator().manual_seed(seed))


# ---- config -----------------------------------------------------------------------------------

def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match=r"prior\.n_embd.*prior\.n_head"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match=r"prior\.n_classes"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="class", n_classes=1)
    with pytest.raises(ValueError, match=r"prior\.frame_shape"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="frames")
    with pytest.raises(ValueError, match=r"prior\.frame_shape"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="frames", frame_shape=(10, 8))
    with pytest.raises(ValueError, match=r"prior\.condition"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="text")
    with pytest.raises(ValueError, match=r"prior\.action_shape.*does the dataset have actions"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="actions")
    with pytest.raises(ValueError, match=r"prior\.action_shape.*5 frames are not a whole number"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="actions", action_shape=(5, 2))
    with pytest.raises(ValueError, match=r"prior\.frame_shape"):
        PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, condition="frames+actions",
                    action_shape=ACTIONS)
    # lists (as in config.json) become tuples
    cfg = PriorConfig(latent_shape=[2, 3, 4], n_codes=K, embedding_dim=D_CB, n_embd=20, n_head=2)
    assert cfg.latent_shape == (2, 3, 4) and cfg.seq_len == 24
    with pytest.raises(ValueError, match="codebook"):
        Prior(cfg, torch.randn(K + 1, D_CB))


def test_codebook_is_a_frozen_saved_buffer():
    prior = make_prior()
    names = {n for n, _ in prior.named_parameters()}
    assert "codebook" not in names and "codebook" in prior.state_dict()
    assert not prior.codebook.requires_grad


# ---- init -------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "class", "frames", "actions", "frames+actions"])
def test_zero_head_gives_uniform_logits_at_init(condition):
    prior = make_prior(condition)
    tokens = random_tokens(3)
    logits = prior(tokens, **cond_inputs(condition, 3))
    assert logits.shape == (3, *LATENT, K)
    assert torch.count_nonzero(logits) == 0
    loss = prior.loss(tokens, **cond_inputs(condition, 3))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(K), abs=1e-6)


# ---- causality --------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "class", "frames", "actions"])
def test_causality(condition):
    prior = make_prior(condition, random_head=True).eval()
    cond = cond_inputs(condition, 2)
    tokens = random_tokens(2)
    L = prior.config.seq_len
    base = prior(tokens, **cond).reshape(2, L, K)
    for i in (0, 5, 11, L - 2):
        changed = tokens.clone().reshape(2, L)
        changed[:, i] = (changed[:, i] + 1 + torch.arange(2)) % K
        out = prior(changed.reshape(tokens.shape), **cond).reshape(2, L, K)
        # positions 0..i never see token i (position i predicts it)
        torch.testing.assert_close(out[:, :i + 1], base[:, :i + 1], rtol=0, atol=1e-6)
        # position i+1 takes token i as input
        assert (out[:, i + 1] - base[:, i + 1]).abs().max() > 1e-3


# ---- attention dropout -------------------------------------------------------------------------

def _qkv(B=2, H=3, L=37, hd=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, hd, generator=g, requires_grad=True) for _ in range(3)]


def test_attention_with_dropout_zero_is_causal_attention():
    """Without dropped entries the blocked path is exactly causal SDPA (values and gradients); blocks of 8
    over 37 positions cover a ragged last block."""
    q, k, v = _qkv()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = causal_attention_with_dropout(q, k, v, 0.0, block=8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    grads = torch.autograd.grad(out, (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_keep_mask_rate_on_both_halves_of_each_word():
    keep = dropout_keep_mask((1000, 1000), 0.3)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    flat = keep.flatten().float()
    for half in (flat[0::2], flat[1::2]):  # low and high 32 bits of the 64-bit words
        assert abs(half.mean().item() - 0.7) < 0.003
    assert dropout_keep_mask((7,), 0.0).all() and not dropout_keep_mask((7,), 1.0).any()


def test_attention_dropout_is_unbiased_and_stays_causal():
    q, k, v = _qkv(L=12)
    torch.manual_seed(0)
    draws = torch.stack([causal_attention_with_dropout(q, k, v, 0.3, block=4) for _ in range(3000)])
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (draws[0] - ref).abs().max() > 0.1  # entries are really dropped
    torch.testing.assert_close(draws.mean(0), ref, rtol=0, atol=0.05)  # E[dropout(P)] = P
    # position i never reads keys/values after i, whatever is dropped
    out = causal_attention_with_dropout(q, k, v, 0.3, block=4)
    gk, gv = torch.autograd.grad(out[:, :, 5].sum(), (k, v))
    assert gk[:, :, 6:].abs().max() == 0 and gv[:, :, 6:].abs().max() == 0
    assert gv[:, :, :6].abs().max() > 0


def test_attention_dropout_is_seeded():
    q, k, v = _qkv()
    torch.manual_seed(3)
    a = causal_attention_with_dropout(q, k, v, 0.3)
    torch.manual_seed(3)
    b = causal_attention_with_dropout(q, k, v, 0.3)
    assert torch.equal(a, b)


# ---- position embedding -----------------------------------------------------------------------

def test_split_width_any_n_embd():
    assert split_width(128, 3) == [43, 43, 42]
    assert split_width(576, 3) == [192, 192, 192]
    assert split_width(20, 3) == [7, 7, 6]
    assert split_width(3, 3) == [1, 1, 1]


@pytest.mark.parametrize("n_embd", [20, 128])
def test_position_embedding_is_concatenated_and_distinct(n_embd):
    prior = make_prior(n_embd=n_embd, n_head=4)
    pe = prior.pos_emb
    assert [t.shape for t in pe.tables] == [(n, w) for n, w in zip(LATENT, split_width(n_embd, 3))]
    grid = pe()
    assert grid.shape == (*LATENT, n_embd)
    T, H, W = pe.tables
    flat = grid.reshape(-1, n_embd)
    for pos in range(prior.config.seq_len):
        a, rest = divmod(pos, LATENT[1] * LATENT[2])
        b, c = divmod(rest, LATENT[2])
        expected = torch.cat([T[a], H[b], W[c]])
        torch.testing.assert_close(grid[a, b, c], expected, rtol=0, atol=0)  # raster order, concatenation
    dist = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
    assert dist.min() > 1e-4  # every (t, h, w) has its own vector


def test_position_embedding_reaches_the_logits():
    prior = make_prior(random_head=True).eval()
    with torch.no_grad():
        prior.codebook.zero_()  # identical inputs everywhere: only positions can tell positions apart
        prior.sos.zero_()
    logits = prior(random_tokens(1)).reshape(-1, K)
    assert torch.cdist(logits, logits).add(torch.eye(len(logits)) * 1e9).min() > 1e-4


# ---- conditioning -----------------------------------------------------------------------------

def test_every_layernorm_is_class_conditional():
    prior = make_prior("class", random_head=True)
    norms = [m for m in prior.modules() if isinstance(m, Norm)]
    assert len(norms) == 2 * prior.config.n_layer + 1  # pre-attn, pre-MLP per block, final
    assert all(m.cond_dim == 3 and not m.ln.elementwise_affine for m in norms)
    tokens = random_tokens(2)
    a = prior(tokens, label=torch.tensor([0, 0]))
    b = prior(tokens, label=torch.tensor([1, 2]))
    assert (a - b).abs().amax(dim=-1).min() > 1e-4  # every position depends on the label
    prior.loss(tokens, label=torch.tensor([0, 2])).backward()
    for m in norms:
        assert m.to_gain.weight.grad.abs().sum() > 0 and m.to_bias.weight.grad.abs().sum() > 0
        assert m.to_gain.weight.grad[:, 1].abs().sum() == 0  # class 1 absent from this batch


@pytest.mark.parametrize("condition", ["actions", "frames+actions"])
def test_every_layernorm_reads_the_normalised_actions(condition):
    prior = make_prior(condition, random_head=True)
    norms = [m for m in prior.modules() if isinstance(m, Norm)]
    per_block = 3 if condition == "frames+actions" else 2  # + the cross-attention's norm
    assert len(norms) == per_block * prior.config.n_layer + 1
    assert all(m.cond_dim == 4 * 2 and not m.ln.elementwise_affine for m in norms)
    assert all(torch.count_nonzero(m.to_gain.weight) == 0 for m in norms)  # gain exactly 1 at init
    assert (prior.blocks[0].cross is not None) == (condition == "frames+actions")

    # normalisation: z-score per action value with the stored training statistics, flattened by frame
    prior.set_action_stats(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]))  # std 0 is stored as 1
    assert torch.equal(prior.state_dict()["action_std"], torch.tensor([2.0, 1.0]))
    actions = torch.tensor([[[3.0, -2.0], [1.0, 0.0], [-1.0, 1.0], [5.0, -3.0]]])
    expected = torch.tensor([[1.0, 0.0, 0.0, 2.0, -1.0, 3.0, 2.0, -1.0]])
    torch.testing.assert_close(prior.action_vector(actions, 1), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(1, 4, 2\)"):
        prior.action_vector(actions[:, :3], 1)
    with pytest.raises(ValueError, match="action-conditional"):
        prior(random_tokens(1), **{k: v for k, v in cond_inputs(condition, 1).items() if k != "actions"})

    tokens = random_tokens(2)
    cond = cond_inputs(condition, 2)
    other = dict(cond, actions=cond["actions"].flip(1))
    a, b = prior(tokens, **cond), prior(tokens, **other)
    assert (a - b).abs().amax(dim=-1).min() > 1e-4  # every position depends on the actions
    prior.loss(tokens, **cond).backward()
    for m in norms:
        assert m.to_gain.weight.grad.abs().sum() > 0 and m.to_bias.weight.grad.abs().sum() > 0


def test_frames_condition_changes_logits_everywhere_and_trains_the_resnet():
    prior = make_prior("frames", random_head=True)
    tokens = random_tokens(2)
    f1 = cond_inputs("frames", 2, seed=1)["frames"]
    f2 = cond_inputs("frames", 2, seed=3)["frames"]
    a, b = prior(tokens, frames=f1), prior(tokens, frames=f2)
    # the cross-attention is not causal: even position 0 sees the frames
    assert (a - b).abs().amax(dim=-1).min() > 1e-4
    prior.loss(tokens, frames=f1).backward()
    for name, p in prior.frame_encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(b.cross is not None for b in prior.blocks)
    feats = prior.encode_frames(f1)
    assert feats.shape == (2, 1 * (FRAMES[0] // 4) * (FRAMES[1] // 4), 12)


def _train(prior, tokens, steps, lr, **cond):
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    prior.train()
    for _ in range(steps):
        loss = prior.loss(tokens, **cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return prior.eval()


@pytest.mark.parametrize("condition", ["class", "frames", "actions"])
def test_condition_is_learned_from_zero_init(condition):
    """From the default (zero-head) init, a few steps teach the prior to read the condition: two
    grids that differ everywhere, told apart only by the label / the frames / the actions. Position 0
    sees nothing but the start vector and the condition, so its prediction must come from the condition."""
    prior = make_prior(condition)
    tokens = torch.stack([torch.full(LATENT, 3), torch.full(LATENT, 7)])
    cond = {"class": {"label": torch.tensor([0, 1])},
            "frames": {"frames": torch.stack([torch.full((3, 1, *FRAMES), -0.4), torch.full((3, 1, *FRAMES), 0.4)])},
            "actions": {"actions": torch.stack([torch.full(ACTIONS, -1.0), torch.full(ACTIONS, 1.0)])}}[condition]
    _train(prior, tokens, 100, 1e-2, **cond)
    first = prior(tokens, **cond)[:, 0, 0, 0]
    assert first.argmax(-1).tolist() == [3, 7]


# ---- learning ---------------------------------------------------------------------------------

def test_overfits_a_tiny_token_set_far_below_unigram_entropy():
    prior = make_prior(n_embd=32, n_head=2)
    tokens = random_tokens(4, seed=5)
    counts = torch.bincount(tokens.flatten(), minlength=K).float()
    p = counts[counts > 0] / counts.sum()
    unigram_bits = -(p * p.log2()).sum().item()
    _train(prior, tokens, 150, 1e-2)
    bits = prior.loss(tokens).item() / math.log(2)
    assert unigram_bits > 3.0
    assert bits < 0.15 * unigram_bits, (bits, unigram_bits)


# ---- incremental decoding ---------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "class", "frames", "frames+actions"])
def test_cached_steps_match_the_full_forward_pass(condition):
    prior = make_prior(condition, random_head=True).eval()
    cond = cond_inputs(condition, 3)
    tokens = random_tokens(3)
    L = prior.config.seq_len
    with torch.no_grad():
        full = prior(tokens, **cond).reshape(3, L, K)
        kv = prior.cross_kv(cond.get("frames"))
        eager, static = (prior.init_cache(3, label=cond.get("label"), cond_kv=kv, actions=cond.get("actions"))
                         for _ in range(2))
        # Poison the eager cache: with an int position, attention must read only the filled prefix (a masked
        # full-length read would turn 0 * NaN into NaN). The static-shape step (tensor position, whole cache
        # under a mask) must agree with it.
        for kv in eager.layers:
            kv.fill_(float("nan"))
        flat = tokens.reshape(3, L)
        for pos in range(L):
            prev = flat[:, pos - 1] if pos else None
            logits = prior.step(prev, pos, eager)
            torch.testing.assert_close(logits, full[:, pos], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(prior.step(prev, torch.tensor(pos), static), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_dtype", [None, torch.bfloat16])
def test_the_compiled_cpu_layout_steps_eagerly_and_refuses_the_masked_whole_cache_form(kv_dtype):
    """KVCache's compiled_cpu layout (keys in blocks, values; attended by decode_kernel) gives the stacked
    layout's logits with an int position, with a float32 or a bfloat16 cache (both read in float32 arithmetic);
    the static-shape form (tensor position, n None) reads a whole cache under a mask, which that layout does not
    support: a clear error, not silently unmasked keys."""
    prior = make_prior(random_head=True).eval()
    tokens = random_tokens(2).reshape(2, -1)
    with torch.no_grad():
        stacked, pair = (prior.init_cache(2, kv_dtype=kv_dtype, for_compiled_cpu=c) for c in (False, True))
        assert pair.layers[0][1].dtype == (kv_dtype or torch.float32)
        for pos in range(6):
            prev = tokens[:, pos - 1] if pos else None
            torch.testing.assert_close(prior.step(prev, pos, pair), prior.step(prev, pos, stacked),
                                       rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pair.v[:, :, :, :6], stacked.v[:, :, :, :6])
        torch.testing.assert_close(pair.k[:, :, :, :6], stacked.k[:, :, :, :6])
        with pytest.raises(ValueError, match="for_compiled_cpu"):
            prior.step(tokens[:, 5], torch.tensor(6), pair)


def test_small_batches_decode_on_one_thread_and_the_count_is_restored():
    from videogpt import sampling
    prior = make_prior(random_head=True)
    seen, step = [], prior.step

    def spy(*args, **kw):  # the thread count while each position is decoded
        seen.append(torch.get_num_threads())
        return step(*args, **kw)

    prior.step = spy
    torch.set_num_threads(2)
    try:
        sampling.sample_tokens(prior, 2, batch_size=2)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        sampling.sample_tokens(prior, sampling.ONE_THREAD_MAX_BATCH + 1, batch_size=sampling.ONE_THREAD_MAX_BATCH + 1)
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(1)  # conftest's setting


# ---- accounting -------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "frames"])
def test_flops_per_token_matches_a_flop_counter(condition):
    prior = make_prior(condition).eval()
    B, L, D = 2, prior.config.seq_len, prior.config.n_embd
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        prior(random_tokens(B), **cond_inputs(condition, B))
    # The counter sees the matmuls and convolutions (not the CPU attention kernel); the attention
    # term of the docstring is added by hand: 4 * n_layer * (L [+ S]) * D.
    S = 4 if condition == "frames" else 0
    expected = counter.get_total_flops() / (B * L) + 4 * prior.config.n_layer * (L + S) * D
    assert prior.flops_per_token() == pytest.approx(expected, rel=1e-6)


def test_num_params():
    prior = make_prior("frames")
    total = sum(p.numel() for p in prior.parameters())
    assert prior.num_params() == total
    enc = sum(p.numel() for p in prior.frame_encoder.parameters()) + sum(
        p.numel() for p in prior.cond_pos_emb.parameters())
    assert prior.num_params(include_frame_encoder=False) == total - enc
