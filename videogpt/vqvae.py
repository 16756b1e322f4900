"""The VideoGPT VQ-VAE: a 3D-conv video autoencoder with an EMA vector-quantised bottleneck.

One module, plain PyTorch (Lightning lives in videogpt/lightning.py). Reading order:
  VQVAEConfig -> SamePadConv3d / SamePadConvTranspose3d -> AxialAttention (with videogpt.position)
  -> AttentionResidualBlock -> Encoder / Decoder -> Codebook -> VQVAE.

Architecture and numbers follow the VideoGPT paper (arXiv 2104.10157) and its code. Where the two
public codebases differ we follow the paper's own repository (separate residual width, a learned
position embedding shared by all attention blocks, a 3x3x3 conv at the decoder input) and fix the
public code's encoder bug (its last encoder conv took 3 input channels with one downsampling level).

Tensors: videos are (B, 3, T, H, W) float in [-0.5, 0.5]; codes are (B, t, h, w) long with
(t, h, w) = (T, H, W) / downsample, or (B, t, h, w, C) with C = n_codebooks > 1 codebooks (the paper's Table 7:
the pre-quantisation conv makes C·D channels, codebook c quantises channels [c·D, (c+1)·D)).
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from videogpt.saved import SavedModel
from videogpt.position import BroadcastPosEmbed

# Mean squared error is divided by this (about the pixel variance of [-0.5, 0.5] video data):
# the paper's "normalised MSE", which it reports makes training steadier and collapses fewer codes.
DATA_VARIANCE = 0.06

# Names of the code grid's axes (Zarr dimension names of stored tokens): the codebook axis exists with n_codebooks > 1.
LATENT_AXES = ("t", "h", "w", "codebook")


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass
class VQVAEConfig:
    """Hyperparameters; the defaults are the paper's UCF-101 model. Field names equal the `vqvae.*` keys of
    videogpt/config.py where they overlap (see `from_params`)."""
    input_shape: tuple[int, int, int] = (16, 64, 64)  # (T, H, W) of the clips; sizes the position tables
    n_hiddens: int = 240        # channels of the encoder/decoder trunk
    res_hiddens: int = 128      # bottleneck channels inside a residual block
    n_res_layers: int = 4       # attention-residual blocks in the encoder and in the decoder
    downsample: tuple[int, int, int] = (4, 2, 2)  # per-axis (T, H, W) factors, powers of two
    n_codes: int = 1024         # codebook size K
    embedding_dim: int = 256    # codebook vector size D
    n_codebooks: int = 1        # C codebooks of n_codes x D each, one per slice of the C·D latent channels
    attention: bool = True      # axial attention in the residual blocks (False = the paper's ablation)
    n_heads: int = 2            # heads of each axial attention
    beta: float = 0.25          # commitment loss weight
    ema_decay: float = 0.99     # codebook EMA decay

    # Left out of config.json while at their default (videogpt.saved.config_dict): keys added after models were
    # first saved, so a one-codebook model's files stay byte for byte what they were.
    omit_at_default: ClassVar[tuple[str, ...]] = ("n_codebooks",)

    def __post_init__(self):
        # JSON round trips (config.json) give lists; keep tuples so configs compare equal.
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.downsample = tuple(int(v) for v in self.downsample)
        if len(self.downsample) != 3 or len(self.input_shape) != 3:
            raise ValueError(f"vqvae.downsample / input_shape: need 3 values (T, H, W), got "
                             f"{list(self.downsample)} / {list(self.input_shape)}")
        for axis, f in zip("THW", self.downsample):
            if not _is_pow2(f):
                raise ValueError(f"vqvae.downsample: {list(self.downsample)} has {f} on axis {axis}; "
                                 "each factor must be a power of two (1, 2, 4, ...)")
        T, H, W = self.input_shape
        if T < 1 or T % self.downsample[0]:
            raise ValueError(f"data.sequence_length: {T} is not divisible by the temporal downsampling "
                             f"vqvae.downsample[0]={self.downsample[0]}")
        for i, size, axis in ((1, H, "H"), (2, W, "W")):
            if size < 1 or size % self.downsample[i]:
                raise ValueError(f"data.resolution: {size} is not divisible by the spatial downsampling "
                                 f"vqvae.downsample[{i}]={self.downsample[i]} ({axis})")
        if self.n_codes < 2:
            raise ValueError(f"vqvae.n_codes: {self.n_codes} must be >= 2")
        for name in ("n_hiddens", "res_hiddens", "embedding_dim", "n_heads", "n_codebooks"):
            if getattr(self, name) < 1:
                raise ValueError(f"vqvae.{name}: {getattr(self, name)} must be >= 1")
        if self.n_res_layers < 0:
            raise ValueError(f"vqvae.n_res_layers: {self.n_res_layers} must be >= 0")
        if self.attention and self.n_hiddens % self.n_heads:
            raise ValueError(f"vqvae.n_hiddens: {self.n_hiddens} is not divisible by vqvae.n_heads={self.n_heads}")
        if self.attention and self.n_hiddens < 3:
            raise ValueError(f"vqvae.n_hiddens: {self.n_hiddens} must be >= 3 with attention "
                             "(the position embedding splits it over the 3 axes)")
        if not 0.0 < self.ema_decay <= 1.0:
            raise ValueError(f"vqvae.ema_decay: {self.ema_decay} must be in (0, 1]")
        if self.beta < 0:
            raise ValueError(f"vqvae.beta: {self.beta} must be >= 0")

    @classmethod
    def from_params(cls, vqvae, input_shape) -> "VQVAEConfig":
        """The config of a `vqvae:` params section (videogpt.config.VQVAEParams) for clips of input_shape
        (T, H, W); the section's training keys (lr, max_steps, ...) are not part of the model."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "input_shape"]
        return cls(input_shape=tuple(input_shape), **{name: getattr(vqvae, name) for name in names})

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """(t, h, w): the latent grid the encoder makes (and the attention's position table covers)."""
        return tuple(s // d for s, d in zip(self.input_shape, self.downsample))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one clip's codes: (t, h, w), or (t, h, w, C) with C = n_codebooks > 1 (the codebook axis last,
        as the paper's code has it, so the prior sees it as a fourth position axis)."""
        return self.grid_shape + ((self.n_codebooks,) if self.n_codebooks > 1 else ())

    @property
    def latent_channels(self) -> int:
        """C·D channels between the encoder and the decoder."""
        return self.n_codebooks * self.embedding_dim

    @property
    def level_strides(self) -> list[tuple[int, int, int]]:
        """Per-axis strides of each resampling level: an axis keeps stride 2 until its factor is used up.
        E.g. (4, 2, 2) -> [(2, 2, 2), (2, 1, 1)]; (1, 1, 1) -> []."""
        logs = [int(math.log2(d)) for d in self.downsample]
        return [tuple(2 if n > j else 1 for n in logs) for j in range(max(logs))]


# --------------------------------------------------------------------------------------------
# "Same"-padded convolutions: output size = input size / stride (conv) or * stride (transposed).
#
# The reference pads explicitly: total pad k - s per axis, the odd pixel at the FRONT
# (front = ceil((k-s)/2), back = floor((k-s)/2)), then an unpadded conv; its transposed conv applies
# the same pad to the input and then uses padding k - 1. We compute exactly the same outputs (same
# taps at the same offsets, same weight layout) with the conv's own symmetric padding = front (for
# the transposed conv: k - 1 - front * s) and a crop of the surplus at the BACK end. Measured on one
# CPU thread this is ~2x faster forward+backward than F.pad + conv (oneDNN handles built-in padding
# much better, and the transposed conv's backward otherwise runs over all the padded zeros).
# tests/test_vqvae.py checks the equivalence against the explicit-pad formulation.


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _front_pad(kernel, stride) -> tuple[int, ...]:
    return tuple((k - s) - (k - s) // 2 for k, s in zip(kernel, stride))  # ceil((k - s) / 2)


def _crop(y: torch.Tensor, size) -> torch.Tensor:
    T, H, W = size
    return y if tuple(y.shape[2:]) == (T, H, W) else y[:, :, :T, :H, :W]


class SamePadConv3d(nn.Module):
    """Conv3d with 'same' padding: input (T, H, W) divisible by the stride -> (T, H, W) / stride."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, bias: bool = True):
        super().__init__()
        kernel_size, stride = _triple(kernel_size), _triple(stride)
        self.conv = nn.Conv3d(c_in, c_out, kernel_size, stride=stride, bias=bias,
                              padding=_front_pad(kernel_size, stride))

    def forward(self, x):
        # k=4, s=1 pads (2, 1): the symmetric pad of 2 yields one extra output at the back; crop it.
        return _crop(self.conv(x), [n // s for n, s in zip(x.shape[2:], self.conv.stride)])


class SamePadConvTranspose3d(nn.Module):
    """ConvTranspose3d with the mirror semantics: (T, H, W) -> (T, H, W) * stride exactly
    (k=4, s=2: L -> 2L; k=4, s=1: L -> L)."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, bias: bool = True):
        super().__init__()
        kernel_size, stride = _triple(kernel_size), _triple(stride)
        # Reference: input padded by `front`, then padding k - 1. Padding the input by f moves every
        # output by f * s, so the equivalent crop-only padding is k - 1 - f * s (>= 0 for k=4, s<=2).
        padding = tuple(k - 1 - f * s for k, f, s in zip(kernel_size, _front_pad(kernel_size, stride), stride))
        if min(padding) < 0:
            raise ValueError(f"unsupported transposed conv kernel {kernel_size} / stride {stride}")
        self.convt = nn.ConvTranspose3d(c_in, c_out, kernel_size, stride=stride, bias=bias, padding=padding)

    def forward(self, x):
        # k=4, s=1 gives one extra output at the back; crop it.
        return _crop(self.convt(x), [n * s for n, s in zip(x.shape[2:], self.convt.stride)])


# --------------------------------------------------------------------------------------------
# Attention at the latent resolution

# CUDA launches the flash and memory-efficient SDPA kernels with the batch as a grid dimension, which has at most
# 65,535 blocks; past it they fail with "invalid configuration argument" (PyTorch issues 142228, 146704).
SDPA_MAX_BATCH = 65_535


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """F.scaled_dot_product_attention of (B', heads, L, head_dim) q, k, v, in slices of at most SDPA_MAX_BATCH
    along B' (each batch entry attends on its own, so slicing changes nothing). Axial attention folds two latent
    axes and the batch into B': along t at 32x32 latents, a batch of 64 clips is 65,536."""
    n = q.shape[0]
    if n <= SDPA_MAX_BATCH:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(q[i:i + SDPA_MAX_BATCH], k[i:i + SDPA_MAX_BATCH],
                                                     v[i:i + SDPA_MAX_BATCH]) for i in range(0, n, SDPA_MAX_BATCH)])


class AxialAttention(nn.Module):
    """Three independent multi-head self-attentions, along T, along H and along W (each position attends
    only to positions that differ in that one axis); their outputs are summed. Non-causal, unmasked.
    Cost is O(thw(t+h+w)) instead of O((thw)^2) for full 3D attention."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        # One fused q|k|v projection per axis (no bias, as in the reference) and an output projection
        # with bias. Init as the public reference: N(0, 1/sqrt(dim)) for both.
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim, bias=False) for _ in range(3))
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        for lin in [*self.qkv, *self.out]:
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(dim))
        for lin in self.out:
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, t, h, w, C) channels-last -> same shape.

        Computed with two matmuls instead of six: the three axes' q|k|v projections stacked into one
        (C, 9C) weight, and their output projections side by side in one (3C, C) weight applied to the
        three attention outputs concatenated along channels, which sums them (y_t W_t + y_h W_h + y_w W_w
        = [y_t | y_h | y_w] [W_t; W_h; W_w]). The parameters stay the three per-axis Linears."""
        B, t, h, w, C = x.shape
        heads = self.n_heads
        qkv = F.linear(x, torch.cat([lin.weight for lin in self.qkv]))
        qkv = qkv.view(B, t, h, w, 3, 3, heads, C // heads)  # (..., axis, q|k|v, head, head_dim)
        # unbind, not select: its backward stacks the three gradients instead of zero-filling a 9C tensor per axis
        ys = [self._attend_along(z, axis) for z, axis in zip(qkv.unbind(4), (1, 2, 3))]
        weight = torch.cat([lin.weight for lin in self.out], dim=1)
        bias = sum(lin.bias for lin in self.out)
        return F.linear(torch.cat(ys, dim=-1), weight, bias)

    @staticmethod
    def _attend_along(qkv: torch.Tensor, axis: int) -> torch.Tensor:
        """qkv (B, t, h, w, 3, heads, head_dim) -> attention along `axis` (1, 2 or 3), (B, t, h, w, C).
        The attended axis goes next to head_dim and the other two fold into the batch: (B', heads, L,
        head_dim), the 4D layout of the fused SDPA kernel. Along w that is a view of qkv; along t and h
        one copy of q, k and v together."""
        moved = qkv.movedim(axis, 5).movedim(3, 0)  # (3, B, a, b, heads, L, head_dim)
        _, B, a, b, heads, L, hd = moved.shape
        q, k, v = moved.reshape(3, B * a * b, heads, L, hd)
        y = _sdpa(q, k, v)  # (B', heads, L, hd)
        return y.transpose(1, 2).reshape(B, a, b, L, heads * hd).movedim(3, axis)


class AttentionResidualBlock(nn.Module):
    """y = x + F(x), F = BN-ReLU-conv3(no bias)-BN-ReLU-conv1(no bias)-BN-ReLU-[+pos, axial attention].
    The convs have no bias because a BatchNorm follows each of them."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        C, R = cfg.n_hiddens, cfg.res_hiddens
        self.net = nn.Sequential(
            nn.BatchNorm3d(C), nn.ReLU(),
            SamePadConv3d(C, R, 3, bias=False),
            nn.BatchNorm3d(R), nn.ReLU(),
            SamePadConv3d(R, C, 1, bias=False),
            nn.BatchNorm3d(C), nn.ReLU(),
        )
        self.attn = AxialAttention(C, cfg.n_heads) if cfg.attention else None

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        h = self.net(x)
        if self.attn is not None:
            # (B, t, h, w, C) for the per-position linear layers: a view of channels-last memory (a
            # no-op unless a conv chose another layout, e.g. PyTorch's own 1x1x1 conv on one thread).
            h = h.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1)
            h = self.attn(h + pos).permute(0, 4, 1, 2, 3)
        return x + h


@contextmanager
def _buffers_kept(module: nn.Module):
    """Puts module's buffers back as they were on entry when the block exits, also by an exception (the
    recomputation of torch.utils.checkpoint stops early by raising one)."""
    saved = [b.clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(module.buffers(), saved):
                b.copy_(s)


def _run_block(block: nn.Module, x: torch.Tensor, pos: torch.Tensor | None, checkpointed: bool) -> torch.Tensor:
    """block(x, pos); with activation checkpointing (trainer.checkpoint_activations) only x is kept for the
    backward pass, which runs the block again (torch.utils.checkpoint, non-reentrant). That second run would
    update BatchNorm's running statistics a second time: they are put back after it, so a checkpointed step
    leaves the same state as a plain one."""
    if not (checkpointed and torch.is_grad_enabled()):
        return block(x, pos)
    return (_eager_checkpointed or _checkpointed)(block, x, pos)


def _checkpointed(block: nn.Module, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return checkpoint(block, x, pos, use_reentrant=False, context_fn=lambda: (nullcontext(), _buffers_kept(block)))


# dynamo cannot trace a checkpoint with a custom context_fn: under torch.compile the checkpointed blocks run eagerly.
# The disabled wrapper is made when checkpointing is switched on, not by a decorator: `torch.compiler.disable`
# imports dynamo and inductor, and importing those with this module made every stage (preprocess too) exit with 1
# instead of by the signal after a Ctrl-C.
_eager_checkpointed = None


def _enable_eager_checkpointed() -> None:
    global _eager_checkpointed
    if _eager_checkpointed is None:
        _eager_checkpointed = torch.compiler.disable(_checkpointed)


# --------------------------------------------------------------------------------------------
# Encoder / decoder


class Encoder(nn.Module):
    """video (B, 3, T, H, W) -> pre-quantisation latents (B, C·D, t, h, w)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        C = cfg.n_hiddens
        strides = cfg.level_strides
        # Kernel 4, stride 2 on the axes still to downsample (stride 1 elsewhere), ReLU after each.
        self.down = nn.ModuleList(SamePadConv3d(3 if j == 0 else C, C, 4, stride=s) for j, s in enumerate(strides))
        # No activation after this conv (the residual blocks start with BN-ReLU). Its input has C
        # channels, or 3 when there is no downsampling at all.
        self.conv_last = SamePadConv3d(C if strides else 3, C, 3)
        self.res = nn.ModuleList(AttentionResidualBlock(cfg) for _ in range(cfg.n_res_layers))
        self.norm = nn.BatchNorm3d(C)
        self.to_latent = SamePadConv3d(C, cfg.latent_channels, 1)  # the reference's pre_vq_conv
        self.checkpoint_blocks = False  # VQVAE.set_activation_checkpointing

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        for conv in self.down:
            x = F.relu(conv(x))
        x = self.conv_last(x)
        for block in self.res:
            x = _run_block(block, x, pos, self.checkpoint_blocks)
        return self.to_latent(F.relu(self.norm(x)))


class Decoder(nn.Module):
    """quantised latents (B, C·D, t, h, w) -> video (B, 3, T, H, W), linear (unclamped) output."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        C = cfg.n_hiddens
        strides = cfg.level_strides
        self.from_latent = SamePadConv3d(cfg.latent_channels, C, 3)  # the paper repo's 3x3x3 input conv
        self.res = nn.ModuleList(AttentionResidualBlock(cfg) for _ in range(cfg.n_res_layers))
        self.norm = nn.BatchNorm3d(C)
        # Mirror of the encoder: full-stride levels first (same order as the encoder), 3 channels last.
        self.up = nn.ModuleList(SamePadConvTranspose3d(C, 3 if j == len(strides) - 1 else C, 4, stride=s)
                                for j, s in enumerate(strides))
        # Without any resampling there is no transposed conv to produce the 3 output channels;
        # a 3x3x3 conv mirrors the encoder's conv_last (which then takes 3 channels).
        self.to_pixels = None if strides else SamePadConv3d(C, 3, 3)
        self.checkpoint_blocks = False  # VQVAE.set_activation_checkpointing

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        x = self.from_latent(x)
        for block in self.res:
            x = _run_block(block, x, pos, self.checkpoint_blocks)
        x = F.relu(self.norm(x))
        for j, convt in enumerate(self.up):
            x = convt(x)
            if j < len(self.up) - 1:
                x = F.relu(x)
        if self.to_pixels is not None:
            x = self.to_pixels(x)
        return x


# --------------------------------------------------------------------------------------------
# Codebook


def _no_autocast(t: torch.Tensor):
    """Context that switches autocast off for t's device (meta tensors, used for FLOP counting, count as CPU)."""
    return torch.autocast(device_type="cpu" if t.device.type == "meta" else t.device.type, enabled=False)


def code_counts(idx: torch.Tensor, n_codes: int) -> torch.Tensor:
    """float32 (K,) histogram of code indices. index_add rather than bincount: a fixed output shape
    (bincount's depends on the data), which torch.compile and meta tensors need."""
    return torch.zeros(n_codes, device=idx.device).index_add_(0, idx, torch.ones(idx.shape, device=idx.device))


def codebook_counts(codes: torch.Tensor, n_codes: int, n_codebooks: int) -> torch.Tensor:
    """float32 (C, K) histograms of codes (..., C) (or (...) with one codebook), one row per codebook."""
    flat = codes.reshape(-1, n_codebooks)
    return torch.stack([code_counts(flat[:, c], n_codes) for c in range(n_codebooks)])


def mean_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of each codebook's code frequencies, counts (C, K), averaged over the codebooks (as the
    paper's code reports it for several codebooks)."""
    ppl = [torch.exp(-(p * torch.log(p + 1e-10)).sum()) for p in (row / row.sum() for row in counts)]
    return sum(ppl) / len(ppl)


def _ddp() -> bool:
    return dist.is_available() and dist.is_initialized()


class Codebook(nn.Module):
    """Vector quantiser with an EMA-updated codebook (no codebook loss term), data-dependent init from
    the first training batch and restart of dead codes. All state is in buffers, so the optimizer never
    sees it and a state_dict saves/restores it (including whether it has been initialised).

    Train mode updates the buffers on every forward; eval mode never touches them. Keep a trained
    VQ-VAE in eval() when it only encodes/decodes (e.g. while training the prior)."""

    def __init__(self, n_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-7):
        super().__init__()
        self.n_codes, self.dim, self.decay, self.eps = n_codes, dim, decay, eps
        self.register_buffer("embeddings", torch.randn(n_codes, dim))
        self.register_buffer("N", torch.zeros(n_codes))          # EMA count of vectors assigned per code
        self.register_buffer("z_avg", self.embeddings.clone())   # EMA sum of vectors assigned per code
        self.register_buffer("initialized", torch.tensor(False))
        # A Python copy of `initialized` for forward to branch on: reading the buffer there would stall the GPU
        # every step (a host sync) and break torch.compile's graph. Kept equal by _init_from and by loading.
        self.needs_init = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.needs_init = not bool(self.initialized)  # one host sync per load

    def usage(self) -> float:
        """Fraction of codes in use (EMA count N >= 1, the restart threshold). Unlike the batch perplexity
        this does not under-report usage when batches are small."""
        return (self.N >= 1.0).float().mean().item()

    def _random_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """K rows drawn without replacement from the batch's vectors; if the batch has fewer than K,
        tile it and add noise (std 0.01/sqrt(D)) so the copies differ. Same rows on every rank."""
        M = flat.shape[0]
        if M < self.n_codes:
            flat = flat.repeat((self.n_codes + M - 1) // M, 1)
            flat = flat + torch.randn_like(flat) * (0.01 / math.sqrt(self.dim))
        rows = flat[torch.randperm(flat.shape[0], device=flat.device)[: self.n_codes]].contiguous()
        if _ddp():
            dist.broadcast(rows, 0)
        return rows

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        rows = self._random_rows(flat)
        self.embeddings.copy_(rows)
        self.z_avg.copy_(rows)
        self.N.fill_(1.0)
        self.initialized.fill_(True)
        self.needs_init = False

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        # Counts and sums per code (index_add instead of a (M, K) one-hot matmul: same numbers, O(M D)).
        n = code_counts(idx, self.n_codes)
        s = torch.zeros_like(self.z_avg).index_add_(0, idx, flat)
        if _ddp():
            dist.all_reduce(n)
            dist.all_reduce(s)
        g = self.decay
        self.N.mul_(g).add_(n, alpha=1 - g)
        self.z_avg.mul_(g).add_(s, alpha=1 - g)
        # Laplace smoothing: keeps never-used codes from dividing by zero, preserves the total count.
        n_tot = self.N.sum()
        N_smooth = (self.N + self.eps) / (n_tot + self.n_codes * self.eps) * n_tot
        self.embeddings.copy_(self.z_avg / N_smooth[:, None])
        # Dead-code restart: every code whose EMA count is below 1 gets a fresh vector from this batch.
        # N and z_avg are deliberately left alone (as in the reference), so a code stays "dead" and is
        # re-drawn each step until it is actually assigned about one vector per step.
        # The draw (and its broadcast) happens every step, also when no code is dead: skipping it would need the
        # dead count on the host (a sync per step) and would shift the torch RNG stream the data loader's
        # shuffles draw from (the default run has dead codes in 163 of its 450 steps).
        rows = self._random_rows(flat)
        used = (self.N >= 1.0)[:, None]
        self.embeddings.copy_(torch.where(used, self.embeddings, rows))

    def codes(self, flat: torch.Tensor) -> torch.Tensor:
        """Nearest code (squared L2) of each row of flat (M, D) float32."""
        e = self.embeddings
        # ||z||^2 - 2 z.e + ||e||^2, one fused addmm
        d = torch.addmm((flat * flat).sum(1, keepdim=True) + (e * e).sum(1)[None, :], flat, e.t(), alpha=-2.0)
        return d.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> dict:
        """z (B, D, t, h, w) -> dict(quantized (B, D, t, h, w) float32 with straight-through gradient,
        codes (B, t, h, w) long, commitment (unweighted mean sq. distance), perplexity)."""
        # Distances, EMA statistics and the restart are done in float32 even under bf16/fp16 autocast:
        # argmin over near-ties and the EMA's small increments are not safe in 8-bit mantissas.
        with _no_autocast(z):
            z = z.float()
            B, D, t, h, w = z.shape
            flat = z.permute(0, 2, 3, 4, 1).reshape(-1, D)
            if self.training and self.needs_init:
                self._init_from(flat.detach())
            idx = self.codes(flat.detach())
            e = F.embedding(idx, self.embeddings).view(B, t, h, w, D).permute(0, 4, 1, 2, 3)  # a copy:
            # the in-place EMA update below does not change what this step quantised to.
            commitment = F.mse_loss(z, e.detach())
            if self.training:
                self._ema_update(flat.detach(), idx)
            quantized = z + (e - z).detach()  # straight-through: forward = e, gradient d/dz = identity
            p = code_counts(idx, self.n_codes) / idx.numel()
            perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        return dict(quantized=quantized, codes=idx.view(B, t, h, w), commitment=commitment, perplexity=perplexity)


# --------------------------------------------------------------------------------------------
# The model


class VQVAE(nn.Module, SavedModel):
    """The video tokenizer. `VQVAE.from_pretrained(folder or hub id)` / `save_pretrained(folder)` load and save
    it (videogpt.saved)."""

    card_title = "VideoGPT VQ-VAE"

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.config = cfg
        # The one position embedding shared by all attention blocks of encoder AND decoder. It is owned
        # here (not by the encoder/decoder) so its parameters appear once in parameters()/state_dict();
        # its (t, h, w, C) tensor is computed once per call and handed to both.
        self.pos_embed = BroadcastPosEmbed(cfg.grid_shape, cfg.n_hiddens) if cfg.attention else None
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.codebook = Codebook(cfg.n_codes, cfg.embedding_dim, cfg.ema_decay)
        # Codebooks 1..C-1 (vqvae.n_codebooks = C). Made after codebook 0 and empty with one codebook, so a
        # one-codebook VQ-VAE keeps its state-dict keys and every random draw it made before the option existed.
        self.extra_codebooks = nn.ModuleList(Codebook(cfg.n_codes, cfg.embedding_dim, cfg.ema_decay)
                                             for _ in range(cfg.n_codebooks - 1))
        # Channels-last 3D (NDHWC) conv weights; activations are converted to it too (`_channels_last`).
        # oneDNN's convolutions then run without layout reorders, and the attention blocks, which work
        # on (B, t, h, w, C), get their input and give their output without a copy.
        self.to(memory_format=torch.channels_last_3d)

    @classmethod
    def from_saved(cls, config: dict, state: dict) -> "VQVAE":
        return cls(VQVAEConfig(**config))

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute the residual blocks' activations in the backward pass instead of keeping them
        (trainer.checkpoint_activations): same gradients and buffers, less memory, more compute."""
        self.encoder.checkpoint_blocks = self.decoder.checkpoint_blocks = bool(on)
        if on:
            _enable_eager_checkpointed()

    @property
    def codebooks(self) -> list[Codebook]:
        """The C codebooks in channel order: codebook c quantises latent channels [c·D, (c+1)·D)."""
        return [self.codebook, *self.extra_codebooks]

    def code_table(self) -> torch.Tensor:
        """(C·K, D): the codebooks' vectors stacked, code k of codebook c at row c·K + k (what the prior embeds)."""
        if not self.extra_codebooks:
            return self.codebook.embeddings
        return torch.cat([cb.embeddings for cb in self.codebooks])

    def codes_used(self) -> float:
        """Fraction of codes in use (Codebook.usage), averaged over the codebooks."""
        if not self.extra_codebooks:
            return self.codebook.usage()
        return sum(cb.usage() for cb in self.codebooks) / len(self.codebooks)

    # ---- shapes and checks

    def grid_shape(self, input_shape=None) -> tuple[int, int, int]:
        """(t, h, w) of the latent grid for clips of (T, H, W) = input_shape (default: the config's)."""
        T, H, W = self.config.input_shape if input_shape is None else input_shape
        dT, dH, dW = self.config.downsample
        if T % dT or H % dH or W % dW:
            raise ValueError(f"input shape {(T, H, W)} is not divisible by vqvae.downsample={self.config.downsample}")
        return (T // dT, H // dH, W // dW)

    def latent_shape(self, input_shape=None) -> tuple[int, ...]:
        """Shape of a clip's codes: the grid (t, h, w), with the codebook axis C last when n_codebooks > 1."""
        return self.grid_shape(input_shape) + self.config.latent_shape[3:]

    def _pos(self, latent_shape) -> torch.Tensor | None:
        if self.pos_embed is None:
            return None
        if tuple(latent_shape) != self.pos_embed.shape:
            raise ValueError(f"latent shape {tuple(latent_shape)} differs from the one the position embedding "
                             f"was built for, {self.pos_embed.shape} (input_shape={self.config.input_shape}); "
                             "with attention the VQ-VAE only takes clips of its configured size")
        return self.pos_embed()

    @staticmethod
    def _channels_last(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d)

    def _check_video(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"VQVAE expects float video (B, 3, T, H, W) in [-0.5, 0.5] (uint8/255 - 0.5); "
                             f"got {x.dtype} {tuple(x.shape)}")

    # ---- public API

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous encoder output (B, C·D, t, h, w), before quantisation."""
        self._check_video(x)
        return self.encoder(self._channels_last(x), self._pos(self.grid_shape(x.shape[2:])))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-0.5, 0.5] -> codes (B, *latent_shape) long. Does not update the codebooks
        (call eval() first so BatchNorm uses its running statistics)."""
        z = self.encode_latents(x)
        with _no_autocast(z):
            B, CD, t, h, w = z.shape
            flat = z.float().permute(0, 2, 3, 4, 1).reshape(-1, CD)
            if not self.extra_codebooks:
                return self.codebook.codes(flat).view(B, t, h, w)
            D = self.config.embedding_dim
            codes = [cb.codes(flat[:, c * D:(c + 1) * D]) for c, cb in enumerate(self.codebooks)]
            return torch.stack(codes, -1).view(B, t, h, w, len(codes))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, *latent_shape) -> codebook vectors (B, t, h, w, C·D), codebook c's in channels [c·D, (c+1)·D)."""
        if not self.extra_codebooks:
            return F.embedding(codes, self.codebook.embeddings)
        return torch.cat([F.embedding(codes[..., c], cb.embeddings) for c, cb in enumerate(self.codebooks)], -1)

    def quantize(self, z: torch.Tensor) -> dict:
        """Encoder output z (B, C·D, t, h, w) through the codebooks (Codebook.forward; in train mode their EMA
        updates): codebook c quantises channels [c·D, (c+1)·D), each with its own init, EMA and restarts, in
        order c = 0, 1, ... . Returns Codebook.forward's dict: quantized (B, C·D, t, h, w), codes (B, *latent_shape),
        commitment (mean over all C·D channels), perplexity averaged over the codebooks (as the paper's code)."""
        if not self.extra_codebooks:
            return self.codebook(z)
        D = self.config.embedding_dim
        parts = [cb(z[:, c * D:(c + 1) * D]) for c, cb in enumerate(self.codebooks)]
        return dict(quantized=self._channels_last(torch.cat([p["quantized"] for p in parts], 1)),
                    codes=torch.stack([p["codes"] for p in parts], -1),
                    commitment=torch.stack([p["commitment"] for p in parts]).mean(),
                    perplexity=torch.stack([p["perplexity"] for p in parts]).mean())

    def decode_latents(self, e: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, C·D, t, h, w) -> video (B, 3, T, H, W)."""
        return self.decoder(self._channels_last(e), self._pos(e.shape[2:]))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, *latent_shape) long -> video (B, 3, T, H, W) float, unclamped (clamp to [-0.5, 0.5] to view)."""
        return self.decode_latents(self.embed(codes).permute(0, 4, 1, 2, 3))

    def forward(self, x: torch.Tensor) -> dict:
        """Training/validation step on video x: dict(loss, recon_loss, commitment_loss, perplexity, recon, codes).
        recon_loss = MSE / 0.06; commitment_loss = beta * mean((z - sg(e))^2); loss = their sum."""
        self._check_video(x)
        pos = self._pos(self.grid_shape(x.shape[2:]))
        x = self._channels_last(x)
        vq = self.quantize(self.encoder(x, pos))
        recon = self.decoder(vq["quantized"], pos)
        recon_loss = F.mse_loss(recon.float(), x.float()) / DATA_VARIANCE
        commitment_loss = self.config.beta * vq["commitment"]
        return dict(loss=recon_loss + commitment_loss, recon_loss=recon_loss, commitment_loss=commitment_loss,
                    perplexity=vq["perplexity"], recon=recon, codes=vq["codes"])

    # ---- accounting

    def flops_per_clip(self, backward: bool = True) -> int:
        """FLOPs (multiply-add = 2) of one clip of cfg.input_shape through forward (+ backward if asked),
        counted by torch's FlopCounterMode on a meta-device copy: no memory, no compute, no buffer change.
        Covers convs, linears and attention; BatchNorm/ReLU/codebook are not counted (tiny)."""
        from torch.utils.flop_counter import FlopCounterMode
        with torch.device("meta"):
            model = VQVAE(self.config)
            x = torch.zeros(1, 3, *self.config.input_shape)
        model.eval()  # eval: no data-dependent codebook init on meta tensors
        with FlopCounterMode(display=False) as counter:
            out = model(x)
            if backward:
                out["loss"].backward()
        return int(counter.get_total_flops())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
