"""Videos longer than the training clips: Prior.prefill, the sliding-window sampler, windowed decoding."""
from types import SimpleNamespace

import numpy as np
import pytest
import test_sampling
import torch

from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import sample, sample_tokens, sample_tokens_sliding, tokens_to_videos, window_starts
from videogpt.vqvae import VQVAE, VQVAEConfig

LATENT = (4, 2, 3)  # t, h, w: L = 24
K, D_CB = 16, 8
FRAMES = (8, 12)    # H, W of the clips (spatial downsampling 4)
TIME = 2            # frames per latent frame: training clips have 8 frames


def make_prior(condition="none", seed=0):
    """A tiny prior with a random head (far-from-uniform distributions) and dropout left on in train mode,
    so the samplers must switch it off themselves."""
    torch.manual_seed(seed)
    cfg = PriorConfig(latent_shape=LATENT, n_codes=K, embedding_dim=D_CB, n_layer=2, n_head=2, n_embd=20,
                      dropout=0.2, attn_dropout=0.3, condition=condition, n_classes=3, frame_shape=FRAMES,
                      action_shape=(LATENT[0] * TIME, 2), resnet_dim=12, resnet_width=4)
    prior = Prior(cfg, torch.randn(K, D_CB))
    torch.nn.init.normal_(prior.head.weight, std=1.0)
    return prior


def make_vqvae():
    """A tiny real VQ-VAE with attention (so it only decodes windows of exactly LATENT[0] latent frames)."""
    torch.manual_seed(0)
    cfg = VQVAEConfig(input_shape=(LATENT[0] * TIME, *FRAMES), n_hiddens=12, res_hiddens=4, n_res_layers=1,
                      downsample=(TIME, 4, 4), n_codes=K, embedding_dim=D_CB, n_heads=2)
    return VQVAE(cfg).eval()


def cond_inputs(condition, n, n_frames=LATENT[0] * TIME):
    return test_sampling.cond_inputs(condition, n, FRAMES, n_frames)


# ---- prefill -----------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["none", "class", "frames", "actions", "frames+actions"])
@pytest.mark.parametrize("n_prefix", [1, 13, 24])
@pytest.mark.parametrize("compiled_cpu_layout", [False, True])
def test_prefill_in_one_pass_equals_stepping_position_by_position(condition, n_prefix, compiled_cpu_layout):
    """Tolerance: 1e-5 absolute and relative on float32 logits (the batched pass and the single-position
    steps round their matmuls differently; the logits are O(1)). Both key/value layouts (KVCache's
    compiled_cpu: keys in blocks and values in two buffers, here stepped eagerly)."""
    prior = make_prior(condition).eval()
    B, L = 3, prior.config.seq_len
    tokens = torch.randint(0, K, (B, L), generator=torch.Generator().manual_seed(2))
    cond = cond_inputs(condition, B)
    step_cond = {"label": cond.get("label"), "actions": cond.get("actions")}
    with torch.no_grad():
        cond_kv = prior.cross_kv(cond.get("frames"))
        stepped_cache, filled_cache = (prior.init_cache(B, cond_kv=cond_kv, for_compiled_cpu=compiled_cpu_layout,
                                                        **step_cond) for _ in range(2))
        stepped = torch.stack([prior.step(tokens[:, p - 1] if p else None, p, stepped_cache)
                               for p in range(n_prefix)], dim=1)
        filled = prior.prefill(tokens[:, :n_prefix], filled_cache)
        assert filled.shape == (B, n_prefix, K)
        torch.testing.assert_close(filled, stepped, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(filled_cache.k[:, :, :, :n_prefix], stepped_cache.k[:, :, :, :n_prefix],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(filled_cache.v[:, :, :, :n_prefix], stepped_cache.v[:, :, :, :n_prefix],
                                   rtol=1e-5, atol=1e-5)
        # ... and the full forward pass agrees too: the prefix's logits are those of teacher forcing
        full = prior(tokens.view(B, *LATENT), **cond).view(B, L, K)[:, :n_prefix]
        torch.testing.assert_close(filled, full, rtol=1e-5, atol=1e-5)
        if n_prefix < L:  # decoding continues from either cache alike
            after = [prior.step(tokens[:, n_prefix - 1], n_prefix, c) for c in (stepped_cache, filled_cache)]
            torch.testing.assert_close(after[1], after[0], rtol=1e-5, atol=1e-5)


def test_prefill_argument_checks():
    prior = make_prior().eval()
    cache = prior.init_cache(2)
    tokens = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="cache was made for 2"):
        prior.prefill(torch.zeros(3, 5, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="1..24"):
        prior.prefill(torch.zeros(2, 25, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="cond_kv"):
        make_prior("frames").init_cache(2)


# ---- the sliding window --------------------------------------------------------------------------

def test_window_starts_cover_the_video():
    assert window_starts(4, 4, 2) == [0]
    assert window_starts(12, 4, 2) == [0, 2, 4, 6, 8]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]  # the last window adds only one latent frame
    assert window_starts(9, 4, 4) == [0, 4, 5]
    assert window_starts(6, 4, 1) == [0, 1, 2]


@pytest.mark.parametrize("condition", ["none", "class", "frames", "actions", "frames+actions"])
def test_three_times_the_training_length(condition):
    """n_frames = 3 x 8: the videos have 24 frames; every window's prefix tokens equal the previous window's
    tokens at the same latent times; the output is the windows laid at their starts; and the first window
    is the one-pass sample of the same seed."""
    prior, vqvae = make_prior(condition), make_vqvae()
    t, h, w = LATENT
    n, n_frames = 3, 3 * t * TIME
    kw = dict(seed=5, batch_size=2, **cond_inputs(condition, n, n_frames))
    videos = sample(prior, vqvae, n, n_frames=n_frames, **kw)
    assert videos.shape == (n, n_frames, *FRAMES, 3) and videos.dtype == np.uint8
    assert prior.training  # mode restored

    tokens, windows = sample_tokens_sliding(prior, n, n_frames // TIME, vqvae=vqvae, return_windows=True, **kw)
    assert tokens.shape == (n, 3 * t, h, w)
    assert [a for a, _ in windows] == [0, 2, 4, 6, 8]  # default stride: half the window
    for (a0, w0), (a1, w1) in zip(windows, windows[1:]):
        kept = a0 + t - a1
        assert torch.equal(w1[:, :kept], w0[:, a1 - a0:])
    for a, window in windows:
        assert torch.equal(tokens[:, a:a + t], window)
    if "actions" in kw:  # the first window sees the first clip-length of the actions
        kw["actions"] = kw["actions"][:, :t * TIME]
    assert torch.equal(tokens[:, :t], sample_tokens(prior, n, **kw))
    assert len(torch.unique(tokens[:, t:])) > 1


@pytest.mark.parametrize("condition", ["none", "class", "actions"])
@pytest.mark.parametrize("stride", [1, 3])
def test_greedy_windows_are_the_model_argmax_given_their_prefix(condition, stride):
    """Greedy decoding: each window's new tokens are the argmax of the full forward pass over that window
    (teacher forcing) given the label / the actions of the window's own frames, so the prefill + step
    path conditions on the prefix (and the actions on the right frames) exactly as training did."""
    prior = make_prior(condition)
    n, t = 2, LATENT[0]
    cond = cond_inputs(condition, n, 10 * TIME)
    _, windows = sample_tokens_sliding(prior, n, 10, window_stride=stride, temperature=0.0, return_windows=True,
                                       **cond)
    hw = LATENT[1] * LATENT[2]
    end = 0
    for a, window in windows:
        window_cond = dict(cond)
        if "actions" in cond:
            window_cond["actions"] = cond["actions"][:, a * TIME:(a + t) * TIME]
        with torch.no_grad():
            logits = prior.eval()(window, **window_cond).reshape(n, -1, K)
        new = slice((end - a) * hw, None)
        assert torch.equal(logits.argmax(-1)[:, new], window.reshape(n, -1)[:, new])
        end = a + t


def test_frame_conditioned_windows_see_the_generated_frames(monkeypatch):
    """Window k > 0 of a frame-conditional prior is conditioned on the first frame of the window as
    generated: the decode of window k-1 at the new window's start, on uint8 levels."""
    prior, vqvae = make_prior("frames"), make_vqvae()
    seen = []
    cross_kv = prior.cross_kv
    monkeypatch.setattr(prior, "cross_kv", lambda frames: seen.append(frames.clone()) or cross_kv(frames))
    cond = cond_inputs("frames", 2)
    _, windows = sample_tokens_sliding(prior, 2, 8, vqvae=vqvae, return_windows=True, seed=1, **cond)
    assert len(seen) == len(windows) == 3
    assert torch.equal(seen[0], cond["frames"])
    for k in (1, 2):
        shift = windows[k][0] - windows[k - 1][0]
        with torch.no_grad():
            decoded = vqvae.decode(windows[k - 1][1]).clamp(-0.5, 0.5)
        expected = ((decoded[:, :, shift * TIME:shift * TIME + 1] + 0.5) * 255).round() / 255 - 0.5
        torch.testing.assert_close(seen[k], expected, rtol=0, atol=1e-6)


def test_long_sampling_argument_checks():
    prior, vqvae = make_prior(), make_vqvae()
    with pytest.raises(ValueError, match="sample.n_frames.*multiple"):
        sample(prior, vqvae, 1, n_frames=17)
    with pytest.raises(ValueError, match="sample.n_frames.*>= the training clip length 8"):
        sample(prior, vqvae, 1, n_frames=6)
    with pytest.raises(ValueError, match="sample.window_stride"):
        sample(prior, vqvae, 1, n_frames=16, window_stride=5)
    with pytest.raises(ValueError, match=r"actions of shape \(1, 16, 2\).*got \(1, 8, 2\)"):
        sample(make_prior("actions"), vqvae, 1, n_frames=16, actions=torch.zeros(1, 8, 2))
    with pytest.raises(ValueError, match="pass vqvae"):
        sample_tokens_sliding(make_prior("frames"), 1, 8, **cond_inputs("frames", 1))
    with pytest.raises(ValueError, match="sample.window_stride: 4 leaves 0 generated frames"):
        sample_tokens_sliding(make_prior("frames"), 1, 8, window_stride=4, vqvae=vqvae, **cond_inputs("frames", 1))


# ---- windowed decoding ---------------------------------------------------------------------------

class EdgeMarkingVQVAE(torch.nn.Module):
    """decode: channel 0 = the latent code (per latent frame, so every window decodes a frame alike),
    channel 1 = 200 where the frame has at least one latent frame of context on both sides in that
    window's decode, else 0."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(downsample=(TIME, 4, 4))
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def decode(self, codes):
        B, t, h, w = codes.shape
        x = codes.float().repeat_interleave(TIME, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
        position = torch.arange(t).repeat_interleave(TIME)
        inside = (torch.minimum(position, t - 1 - position) >= 1).float() * 200
        # scaled into [-0.5, 0.5] so the uint8 conversion keeps the values: v -> v / 255 - 0.5
        return torch.stack([x, inside.view(1, -1, 1, 1).expand_as(x), torch.zeros_like(x)], dim=1) / 255 - 0.5


@pytest.mark.parametrize("n_latent, window", [(12, 4), (11, 4), (9, 4), (13, 8), (20, 8), (6, 3)])
def test_windowed_decode_blends_decodes_that_saw_both_sides(n_latent, window):
    """Every frame once and in order (where all decodes agree, blending changes nothing), and more than half
    of each frame's weight (away from the video's two ends) comes from decodes in which it had context on
    both sides."""
    vq = EdgeMarkingVQVAE()
    tokens = torch.randint(0, K, (2, n_latent, 2, 3), generator=torch.Generator().manual_seed(0))
    videos = tokens_to_videos(vq, tokens, batch_size=1, window=window)
    assert videos.shape == (2, n_latent * TIME, 8, 12, 3)
    np.testing.assert_array_equal(videos[..., 0], tokens.repeat_interleave(TIME, 1).repeat_interleave(4, 2)
                                  .repeat_interleave(4, 3).numpy())
    inside = videos[0, :, 0, 0, 1].astype(float) / 200
    interior = slice(window // 2 * TIME, (n_latent - window // 2) * TIME)
    assert inside[interior].min() > 0.5
    assert inside[0] == 0  # the first frame has nothing before it, in its only decode


def test_windowed_decode_of_a_real_vqvae_is_closer_to_a_whole_decode_than_chunks_are():
    """A VQ-VAE without attention decodes any length at once. The blended windows stay closer to that whole
    decode than back-to-back chunks decoded apart, most of all at the chunk boundaries."""
    torch.manual_seed(0)
    cfg = VQVAEConfig(input_shape=(LATENT[0] * TIME, *FRAMES), n_hiddens=12, res_hiddens=4, n_res_layers=1,
                      downsample=(TIME, 4, 4), n_codes=K, embedding_dim=D_CB, attention=False)
    vq = VQVAE(cfg).eval()
    tokens = torch.randint(0, K, (2, 12, 2, 3), generator=torch.Generator().manual_seed(1))
    whole = tokens_to_videos(vq, tokens).astype(float)
    windowed = tokens_to_videos(vq, tokens, window=LATENT[0]).astype(float)
    chunks = np.concatenate([tokens_to_videos(vq, part) for part in tokens.split(LATENT[0], 1)], 1).astype(float)
    assert windowed.shape == whole.shape == (2, 24, *FRAMES, 3)
    error = lambda video: np.abs(video - whole).mean(axis=(0, 2, 3, 4))  # per frame
    assert error(windowed).mean() < error(chunks).mean()
    boundaries = [7, 8, 15, 16]  # the frames either side of the chunk boundaries
    assert error(windowed)[boundaries].mean() < 0.5 * error(chunks)[boundaries].mean()


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["class", "frames", "actions"])
def test_compiled_sliding_windows_draw_the_eager_tokens(condition):
    """The compiled CPU step in the sliding-window sampler: each later window starts after a prefill of its kept
    prefix (its first compiled position is not 1), frames conditioning adds the cross-attention; same tokens as
    the eager step for the same seed."""
    prior, vqvae = make_prior(condition), make_vqvae()
    n = 2
    kw = dict(seed=4, batch_size=2, vqvae=vqvae, **cond_inputs(condition, n, 8 * TIME))
    compiled = sample_tokens_sliding(prior, n, 8, compile=True, **kw)
    assert torch.equal(compiled, sample_tokens_sliding(prior, n, 8, compile=False, **kw))
