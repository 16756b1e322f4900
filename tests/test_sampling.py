"""The sampler: cache == recompute, greedy / temperature / top-k / top-p, seeds, decoding to uint8."""

import numpy as np
import pytest
import torch

from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import (choose, filter_logits, sample, sample_tokens, sample_tokens_recompute,
                               tokens_to_videos)

LATENT = (2, 3, 4)  # L = 24
K, D_CB = 16, 8
FRAMES = (8, 8)
ACTIONS = (4, 2)  # 4 frames per clip (2 per latent frame), 2 values per action


def make_prior(condition="none", seed=0, head_std=1.0):
    """A tiny prior with a random (not zero) head, so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    cfg = PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, n_layer=2, n_head=2, n_embd=20,
                      dropout=0.2, attn_dropout=0.3, condition=condition, n_classes=3, frame_shape=FRAMES,
                      action_shape=ACTIONS, resnet_dim=12, resnet_width=4)
    prior = Prior(cfg, torch.randn(K, D_CB))
    torch.nn.init.normal_(prior.head.weight, std=head_std)
    return prior  # left in train mode on purpose: the samplers must switch dropout off themselves


def cond_inputs(condition, n, frame_shape=FRAMES, n_frames=ACTIONS[0]):
    """The conditioning arguments for n samples; actions (n, n_frames, 2) cover n_frames frames."""
    g = torch.Generator().manual_seed(11)
    cond = {}
    if condition == "class":
        cond["label"] = torch.randint(0, 3, (n,), generator=g)
    if "frames" in condition:
        cond["frames"] = torch.rand(n, 3, 1, *frame_shape, generator=g) - 0.5
    if "actions" in condition:
        cond["actions"] = torch.randn(n, n_frames, ACTIONS[1], generator=g) * 3 + 1
    return cond


def teacher_forced_logits(prior, tokens, **cond):
    """Logits of every position given the sampled prefix (the distributions the sampler drew from)."""
    with torch.no_grad():
        return prior.eval()(tokens, **cond).reshape(len(tokens), -1, K)


# ---- cache == recompute -----------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "class", "frames", "actions", "frames+actions"])
@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=1.0),
                                      dict(temperature=0.8, top_k=5, top_p=0.9)],
                         ids=["greedy", "multinomial", "topk_topp"])
def test_cached_sampler_equals_recompute_loop(condition, settings):
    prior = make_prior(condition)
    kw = dict(settings, seed=3, batch_size=2, **cond_inputs(condition, 3))  # 3 samples: an uneven last batch
    cached = sample_tokens(prior, 3, **kw)
    assert prior.training  # mode restored
    reference = sample_tokens_recompute(prior, 3, **kw)
    assert cached.shape == (3, *LATENT) and cached.dtype == torch.long and cached.device.type == "cpu"
    assert torch.equal(cached, reference)
    assert len(torch.unique(cached)) > 1  # not a degenerate all-equal grid


# Tokens drawn by the sampler as it was before the static-shape decode step (commit f997281), seed 7, 2 samples of
# make_prior(condition, head_std=0.3): the decode step's rewrites must keep drawing exactly these.
RECORDED = {
    ("none", "multinomial"): [[11, 9, 12, 12, 9, 5, 7, 12, 10, 12, 13, 12, 4, 6, 9, 4, 12, 0, 14, 1, 14, 8, 11, 11], [11, 11, 13, 10, 12, 9, 11, 10, 12, 9, 10, 14, 11, 9, 4, 6, 13, 11, 7, 14, 14, 11, 9, 6]],
    ("none", "topk_topp"): [[12, 10, 12, 11, 9, 3, 11, 11, 9, 6, 13, 12, 9, 3, 11, 9, 6, 0, 14, 11, 13, 12, 11, 11], [12, 11, 11, 10, 12, 9, 7, 10, 11, 9, 4, 14, 11, 9, 3, 11, 11, 9, 3, 14, 14, 13, 12, 9]],
    ("class", "multinomial"): [[8, 4, 5, 10, 7, 4, 4, 5, 8, 10, 10, 10, 4, 4, 4, 4, 5, 4, 12, 4, 5, 8, 10, 10], [8, 8, 10, 10, 10, 6, 10, 11, 8, 8, 9, 12, 10, 2, 3, 2, 10, 6, 4, 10, 15, 6, 8, 8]],
    ("class", "topk_topp"): [[8, 4, 5, 10, 7, 4, 4, 4, 4, 10, 10, 10, 4, 4, 4, 4, 4, 0, 10, 0, 10, 4, 10, 10], [8, 8, 10, 10, 6, 3, 11, 8, 8, 8, 8, 10, 8, 0, 7, 0, 10, 6, 8, 10, 13, 6, 8, 8]],
    ("frames+actions", "multinomial"): [[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 6, 2, 2, 2, 2, 2], [11, 11, 11, 11, 11, 6, 11, 11, 11, 11, 11, 12, 9, 9, 9, 9, 11, 9, 9, 11, 12, 10, 9, 9]],
    ("frames+actions", "topk_topp"): [[2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2], [11, 11, 11, 11, 11, 9, 11, 11, 11, 10, 11, 11, 9, 9, 9, 9, 11, 9, 9, 11, 11, 10, 10, 11]],
}
RECORDED_SETTINGS = {"multinomial": dict(temperature=1.0), "topk_topp": dict(temperature=0.8, top_k=5, top_p=0.9)}


@pytest.mark.parametrize("condition, settings", list(RECORDED))
def test_sampler_draws_the_recorded_tokens(condition, settings):
    prior = make_prior(condition, head_std=0.3)
    cond = cond_inputs(condition, 2)
    tokens = sample_tokens(prior, 2, seed=7, batch_size=2, **RECORDED_SETTINGS[settings], **cond)
    assert tokens.reshape(2, -1).tolist() == RECORDED[condition, settings]


def test_sampling_is_independent_of_batch_size():
    prior = make_prior()
    a = sample_tokens(prior, 4, seed=5, batch_size=4)
    b = sample_tokens(prior, 4, seed=5, batch_size=1)
    assert torch.equal(a, b)


# ---- seeds ------------------------------------------------------------------------------------

def test_same_seed_same_samples_different_seed_different():
    prior = make_prior()
    a = sample_tokens(prior, 4, seed=1)
    b = sample_tokens(prior, 4, seed=1)
    c = sample_tokens(prior, 4, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # samples within a batch differ too


def test_sampling_follows_the_model_distribution():
    """The inverse-CDF draw is a draw from softmax(logits): empirical frequencies match."""
    torch.manual_seed(0)
    logits = torch.randn(1, 6) * 1.5
    u = torch.rand(20000)
    picks = choose(logits.expand(len(u), -1), u)
    freq = torch.bincount(picks, minlength=6).float() / len(u)
    torch.testing.assert_close(freq, logits.softmax(-1)[0], rtol=0, atol=0.015)


# ---- temperature, top-k, top-p ----------------------------------------------------------------

def test_temperature_zero_is_argmax_and_small_temperature_converges_to_it():
    prior = make_prior()
    greedy = sample_tokens(prior, 3, temperature=0.0, seed=0)
    logits = teacher_forced_logits(prior, greedy)
    assert torch.equal(greedy.reshape(3, -1), logits.argmax(-1))
    for seed in (0, 1):
        assert torch.equal(sample_tokens(prior, 3, temperature=1e-4, seed=seed), greedy)
    assert not torch.equal(sample_tokens(prior, 3, temperature=1.0, seed=0), greedy)
    assert torch.equal(sample_tokens(prior, 3, top_k=1, seed=0), greedy)


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5, 1.5]])
    kept = torch.isfinite(filter_logits(logits, top_k=3))[0]
    assert kept.tolist() == [False, True, False, True, False, True]
    u = torch.linspace(0, 0.9999, 1000)
    picks = set(choose(logits.expand(1000, -1), u, top_k=3).tolist())
    assert picks == {1, 3, 5}  # all of the top 3 and nothing else


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: set(torch.isfinite(filter_logits(logits, top_p=p))[0].nonzero().flatten().tolist())
    assert kept(0.01) == {1}          # always at least the most likely code
    assert kept(0.5) == {1}           # 0.5 >= 0.5 already
    assert kept(0.75) == {1, 3}       # 0.5 + 0.3
    assert kept(0.85) == {1, 3, 2}    # + 0.15
    assert kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    u = torch.linspace(0, 0.9999, 1000)
    assert set(choose(logits.expand(1000, -1), u, top_p=0.75).tolist()) == {1, 3}


@pytest.mark.parametrize("mode", ["top_k", "top_p"])
def test_sampled_codes_stay_inside_the_allowed_set(mode):
    prior = make_prior(head_std=0.5)

    def outside(tokens):
        """Mask of positions whose sampled code is outside the top 3 / the 0.6-nucleus."""
        logits = teacher_forced_logits(prior, tokens)
        chosen = tokens.reshape(len(tokens), -1, 1)
        if mode == "top_k":
            return (logits > logits.gather(-1, chosen)).sum(-1) >= 3
        probs = logits.softmax(-1)
        mass_before = (probs * (probs > probs.gather(-1, chosen))).sum(-1)  # of the more likely codes
        return mass_before >= 0.6

    kw = {"top_k": 3} if mode == "top_k" else {"top_p": 0.6}
    assert not outside(sample_tokens(prior, 4, seed=0, **kw)).any()
    assert outside(sample_tokens(prior, 4, seed=0)).any()  # unfiltered, the check does fire


# ---- arguments --------------------------------------------------------------------------------

def test_argument_checks():
    prior = make_prior("class")
    with pytest.raises(ValueError, match="label"):
        sample_tokens(prior, 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(make_prior(), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_tokens(make_prior(), 2, top_p=0.0)
    with pytest.raises(ValueError, match="frames"):
        sample_tokens(make_prior("frames"), 2)
    with pytest.raises(ValueError, match=r"pass actions of shape \(2, 4, 2\).*got none"):
        sample_tokens(make_prior("actions"), 2)
    with pytest.raises(ValueError, match=r"pass actions of shape \(2, 4, 2\).*got \(2, 5, 2\)"):
        sample_tokens(make_prior("actions"), 2, actions=torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="NaN"):
        sample_tokens(make_prior("actions"), 2, actions=torch.full((2, 4, 2), float("nan")))


# ---- the decode precision (sample.dtype, sample.kv_dtype) ------------------------------------------

def test_decode_dtypes_resolve_per_device_and_errors_name_the_key():
    from videogpt.sampling import decode_dtypes
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decode_dtypes("auto", "auto", cpu) == (torch.float32, torch.float32)
    assert decode_dtypes("auto", "auto", cuda) == (torch.bfloat16, torch.bfloat16)
    assert decode_dtypes("float32", "bfloat16", cuda) == (torch.float32, torch.bfloat16)
    assert decode_dtypes("bfloat16", "auto", cpu) == (torch.bfloat16, torch.bfloat16)
    with pytest.raises(ValueError, match="sample.dtype"):
        sample_tokens(make_prior(), 2, dtype="float16")
    with pytest.raises(ValueError, match="sample.kv_dtype"):
        sample_tokens(make_prior(), 2, kv_dtype="fp8")


@pytest.mark.parametrize("condition", ["none", "class", "frames+actions"])
def test_bf16_decoding_costs_under_a_hundredth_of_a_bit_per_dim(condition):
    """bits/dim of teacher-forced decoding: in float32 it is the full forward pass's; in bfloat16 (step and
    cache, or the cache alone) within 0.01 of it, and the cache really holds bfloat16. head_std 0.1: logits of
    a trained model's scale (about log2 K bits/dim); bf16's error grows with the logits (a random head of std 0.3
    gives 6.5 bits/dim, worse than uniform, and a 0.012 gap). The default trained model: README, Performance."""
    from videogpt.sampling import decode_bits_per_dim
    prior = make_prior(condition, head_std=0.1).eval()
    cond = cond_inputs(condition, 6)
    tokens = torch.randint(0, K, (6, *LATENT), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = prior.loss(tokens, **cond).item() / np.log(2)
    fp32 = decode_bits_per_dim(prior, tokens, dtype="float32", batch_size=4, **cond)
    assert abs(fp32 - full) < 1e-5
    for dtype, kv_dtype in (("bfloat16", "auto"), ("float32", "bfloat16")):
        bf16 = decode_bits_per_dim(prior, tokens, dtype=dtype, kv_dtype=kv_dtype, batch_size=4, **cond)
        assert bf16 != fp32 and abs(bf16 - fp32) < 0.01, (dtype, kv_dtype, bf16, fp32)
    cache = prior.init_cache(2, dtype=torch.bfloat16, label=cond.get("label", [0, 1])[:2],
                             cond_kv=prior.cross_kv(cond["frames"][:2]) if "frames" in cond else None,
                             actions=cond["actions"][:2] if "actions" in cond else None)
    assert {kv.dtype for kv in cache.layers} == {torch.bfloat16} and cache.weights[0].qkv.dtype == torch.bfloat16


def test_bf16_sampling_draws_valid_tokens_close_to_float32():
    """A bf16 decode draws from nearly the same distributions: with the same uniforms most tokens agree."""
    prior = make_prior(head_std=0.3)
    fp32 = sample_tokens(prior, 4, seed=1, batch_size=4)
    bf16 = sample_tokens(prior, 4, seed=1, batch_size=4, dtype="bfloat16")
    assert bf16.dtype == torch.long and bf16.min() >= 0 and bf16.max() < K
    assert (bf16 == fp32).float().mean() > 0.8


def test_progress_bar_runs(capsys):
    assert sample_tokens(make_prior(), 1, progress=True).shape == (1, *LATENT)


# ---- decoding to videos -----------------------------------------------------------------------

class FakeVQVAE(torch.nn.Module):
    """decode: a code-dependent value per pixel, in a range wider than [-0.5, 0.5] to exercise the clamp."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.calls = []

    def decode(self, codes):
        assert not self.training
        self.calls.append(len(codes))
        x = (codes.float() / (K - 1) - 0.5) * 1.2 * self.scale  # [-0.6, 0.6]
        x = x.repeat_interleave(2, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)  # (B, T, H, W)
        return torch.stack([x, -x, torch.zeros_like(x)], dim=1)  # (B, 3, T, H, W)


def test_sample_returns_uint8_channels_last_videos():
    prior, vq = make_prior(), FakeVQVAE()
    videos = sample(prior, vq, 5, seed=4, batch_size=2)
    assert vq.calls == [2, 2, 1] and vq.training
    assert isinstance(videos, np.ndarray) and videos.dtype == np.uint8
    assert videos.shape == (5, 4, 12, 16, 3)
    tokens = sample_tokens(prior, 5, seed=4, batch_size=2)
    x = (tokens.double() / (K - 1) - 0.5) * 1.2
    expected = np.rint((np.clip(x.numpy(), -0.5, 0.5) + 0.5) * 255).astype(np.uint8)
    np.testing.assert_array_equal(videos[:, 0, 0, 0, 0], expected[:, 0, 0, 0])
    np.testing.assert_array_equal(videos[..., 2], 128)  # 0.5 * 255 = 127.5 rounds (half to even) to 128
    top = tokens_to_videos(vq, torch.full((1, *LATENT), K - 1))
    assert top[..., 0].min() == 255 and top[..., 1].max() == 0  # clamped, not wrapped


# ---- the compiled decode step -------------------------------------------------------------------
# One compile (tens of seconds on 2 cores) shared by these tests: a class-conditional prior (the step reads the
# conditional LayerNorms' vector from the cache) with top-k and top-p on (the whole fused pick is traced). On the
# CPU the step is compiled with a symbolic prefix length, Inductor's freezing and its CPP GEMM template.

COMPILED_KW = dict(batch_size=2, **RECORDED_SETTINGS["topk_topp"])


@pytest.fixture(scope="module")
def compiled():
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    prior = make_prior("class", head_std=0.3)
    cond = cond_inputs("class", 2)
    first = sample_tokens(prior, 2, seed=7, compile=True, **COMPILED_KW, **cond)
    graphs_after_first = counters["stats"]["unique_graphs"]
    second = sample_tokens(prior, 2, seed=8, compile=True, **COMPILED_KW, **cond)  # same shapes, another seed
    return dict(prior=prior, cond=cond, first=first, second=second, graphs_after_first=graphs_after_first,
                graphs_after_second=counters["stats"]["unique_graphs"], counters=counters)


@pytest.mark.slow
def test_compiled_step_compiles_once_for_all_positions_and_samples(compiled):
    """One graph for the 23 compiled positions of a sample (position 0 runs the same function eagerly; the
    position is a tensor and the filled length a symbol) and no recompilation for a second sample of the
    same shape."""
    assert compiled["graphs_after_first"] == 1
    assert compiled["graphs_after_second"] == 1
    assert not compiled["counters"]["recompiles"]


@pytest.mark.slow
def test_compiled_step_draws_the_eager_tokens_with_logits_within_1e_5(compiled):
    from videogpt.sampling import _Picker
    prior, cond = compiled["prior"], compiled["cond"]
    assert compiled["first"].reshape(2, -1).tolist() == RECORDED["class", "topk_topp"]
    assert torch.equal(compiled["second"], sample_tokens(prior, 2, seed=8, **COMPILED_KW, **cond))
    # Every position's logits: the compiled step, the eager one and the full forward pass (teacher forcing).
    tokens = compiled["first"].reshape(2, -1)
    rule = (COMPILED_KW["temperature"], COMPILED_KW["top_k"], COMPILED_KW["top_p"])
    full = teacher_forced_logits(prior, compiled["first"], **cond)
    with torch.inference_mode():  # as in the sampler: a tensor made outside it would be another graph
        compiled_pick, eager_pick = (_Picker(prior, *rule, compiled=c) for c in (True, False))
        u = torch.rand(2, prior.config.seq_len, generator=torch.Generator().manual_seed(7))
        cache, eager_cache = (pick.init_cache(2, label=cond["label"]) for pick in (compiled_pick, eager_pick))
        prev = torch.zeros(2, dtype=torch.long)
        for p in range(prior.config.seq_len):
            picked, logits = compiled_pick.step(cache, prev, p, u[:, p])
            eager_picked, eager_logits = eager_pick.step(eager_cache, prev, p, u[:, p])
            torch.testing.assert_close(logits, eager_logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(eager_logits, full[:, p], rtol=0, atol=1e-5)
            assert torch.equal(picked, eager_picked)
            prev = tokens[:, p].contiguous()  # as the sampler feeds it (a strided view would be another graph)
    assert compiled["counters"]["stats"]["unique_graphs"] == 1  # the direct calls reused the sampler's graph


@pytest.mark.slow
def test_compiled_loop_calls_the_guarded_steps_graph_without_dynamo(compiled, monkeypatch):
    """In a decode loop, the steps after the first compiled one (which runs through Dynamo, guards checked) call
    the graph it ran directly (sampling._CapturedGraph); where that graph cannot be called so, the loop stays on
    Dynamo's path. Both draw the eager tokens."""
    from videogpt import sampling
    prior, cond = compiled["prior"], compiled["cond"]
    direct, calls = sampling._CapturedGraph.direct, []
    monkeypatch.setattr(sampling._CapturedGraph, "direct",
                        lambda self, *args: calls.append(args[-1]) or direct(self, *args))
    tokens = sample_tokens(prior, 2, seed=7, compile=True, **COMPILED_KW, **cond)
    assert calls == list(range(3, prior.config.seq_len + 1))  # n = pos + 1 for positions 2.. (0 eager, 1 guarded)
    assert tokens.reshape(2, -1).tolist() == RECORDED["class", "topk_topp"]
    graph = sampling._CapturedGraph.last_run()
    assert graph is not None and graph.inputs is not None
    monkeypatch.setattr(graph, "inputs", None)  # as if its inputs had no expression: Dynamo's path
    calls.clear()
    assert torch.equal(sample_tokens(prior, 2, seed=7, compile=True, **COMPILED_KW, **cond), tokens)
    assert calls == [] and not compiled["counters"]["recompiles"]


@pytest.mark.slow
def test_compiled_step_follows_weights_changed_in_place(compiled):
    """Freezing copies the weights into the graph; after an in-place change (an optimizer step) the next compiled
    run must use the new values (sampling._drop_stale_frozen_weights), not the frozen ones."""
    prior, cond = make_prior("class", seed=1, head_std=0.3), cond_inputs("class", 2)
    sample_tokens(prior, 2, seed=7, compile=True, **COMPILED_KW, **cond)
    with torch.no_grad():
        for p in prior.parameters():
            p.mul_(1.5)
    again = sample_tokens(prior, 2, seed=7, compile=True, **COMPILED_KW, **cond)
    assert torch.equal(again, sample_tokens(prior, 2, seed=7, compile=False, **COMPILED_KW, **cond))


def test_auto_compiles_on_the_cpu_only_for_runs_that_repay_it():
    from videogpt.sampling import AUTO_COMPILE_MIN_GB, decode_bytes_per_step, use_compile
    prior = make_prior()
    cfg = prior.config
    per_step = decode_bytes_per_step(prior, 4)
    weights = sum(p.numel() for b in prior.blocks for p in b.parameters()) + prior.head.weight.numel()
    assert per_step == 4 * (weights + cfg.n_layer * 4 * 2 * cfg.seq_len / 2 * cfg.n_embd)
    # a bfloat16 cache: the same weights, half the key/value bytes
    kv_elements = cfg.n_layer * 4 * cfg.seq_len * cfg.n_embd  # keys and values of half the sequence
    assert decode_bytes_per_step(prior, 4, torch.bfloat16) == 4 * weights + 2 * kv_elements
    enough = -(-AUTO_COMPILE_MIN_GB * 10 ** 9 // per_step)
    assert use_compile("auto", prior, 4, enough) and not use_compile("auto", prior, 4, enough - 1)
    assert use_compile(True, prior, 4, 1) and not use_compile(False, prior, 4, 10 ** 12)
    with pytest.raises(ValueError, match="sample.compile"):
        use_compile("yes", prior, 4, 1)
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-compiler++",)}):  # Inductor finds no compiler
        assert not use_compile("auto", prior, 4, enough)
    assert use_compile("auto", prior, 4, enough)


@pytest.mark.slow
def test_compiled_step_on_the_default_model_matches_eager_at_every_position():
    """The default params' prior (4 layers x 128 over the default VQ-VAE's 4x8x8 codes; random weights with a
    non-zero head): one sample of 2 sequences, compiled against eager, logits within 1e-5 at every position, and
    the same tokens for the same seed."""
    from videogpt.config import load
    from videogpt.prior import PriorConfig
    from videogpt.sampling import _Picker
    from videogpt.vqvae import VQVAEConfig
    p = load("params.yaml")
    vq = VQVAEConfig.from_params(p.vqvae, input_shape=(p.data.sequence_length, p.data.resolution, p.data.resolution))
    cfg = PriorConfig.from_params(p.prior, vq, n_classes=0, frame_shape=(p.data.resolution, p.data.resolution))
    torch.manual_seed(0)
    prior = Prior(cfg, torch.randn(cfg.n_codebooks * cfg.n_codes, cfg.embedding_dim)).eval()
    torch.nn.init.normal_(prior.head.weight, std=0.05)
    tokens = sample_tokens(prior, 2, seed=3, batch_size=2, compile=True)
    assert torch.equal(tokens, sample_tokens(prior, 2, seed=3, batch_size=2, compile=False))
    flat = tokens.reshape(2, -1)
    with torch.inference_mode():
        compiled_pick, eager_pick = (_Picker(prior, 1.0, None, None, compiled=c) for c in (True, False))
        cache, eager_cache = compiled_pick.init_cache(2), eager_pick.init_cache(2)
        prev, u = torch.zeros(2, dtype=torch.long), torch.rand(2)
        for p_ in range(cfg.seq_len):
            _, logits = compiled_pick.step(cache, prev, p_, u)
            _, eager_logits = eager_pick.step(eager_cache, prev, p_, u)
            torch.testing.assert_close(logits, eager_logits, rtol=0, atol=1e-5)
            prev = flat[:, p_].contiguous()


@pytest.mark.slow
def test_compiled_step_with_a_bfloat16_cache_matches_eager_at_every_position():
    """sample.kv_dtype bfloat16 with the compiled CPU step (its kernel reads the bfloat16 cache, widening it to
    float32): the eager step's logits, with the same bfloat16 cache, within 1e-5 at every position, and its tokens."""
    from videogpt.sampling import _Picker
    prior = make_prior(head_std=0.3).eval()
    kw = dict(seed=2, batch_size=2, kv_dtype="bfloat16")
    tokens = sample_tokens(prior, 2, compile=True, **kw)
    assert torch.equal(tokens, sample_tokens(prior, 2, compile=False, **kw))
    flat = tokens.reshape(2, -1)
    with torch.inference_mode():
        picks = [_Picker(prior, 1.0, None, None, compiled=c, dtypes=(torch.float32, torch.bfloat16))
                 for c in (True, False)]
        caches = [pick.init_cache(2) for pick in picks]
        assert caches[0].layers[0][0].dtype == caches[1].layers[0].dtype == torch.bfloat16
        prev, u = torch.zeros(2, dtype=torch.long), torch.rand(2)
        with picks[0].loop():
            for p_ in range(prior.config.seq_len):
                (_, logits), (_, eager_logits) = (pick.step(cache, prev, p_, u) for pick, cache in zip(picks, caches))
                torch.testing.assert_close(logits, eager_logits, rtol=0, atol=1e-5)
                prev = flat[:, p_].contiguous()


@pytest.mark.slow
def test_compiled_sampling_with_many_priors_keeps_one_priors_graphs():
    """Each prior's frozen weights make a graph of their own; sampling with more priors than torch.compile's
    recompile limit (8) in one process still runs, and each draws its eager tokens."""
    from torch._dynamo.utils import counters
    for seed in range(9):  # one more than the limit
        prior = make_prior(seed=seed, head_std=0.3)
        kw = dict(seed=seed, batch_size=2)
        assert torch.equal(sample_tokens(prior, 2, compile=True, **kw), sample_tokens(prior, 2, compile=False, **kw))
    assert not counters["recompiles"]  # every prior after the first started from a reset cache
