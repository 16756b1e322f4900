"""The GPT prior over VQ-VAE codes (VideoGPT, arXiv 2104.10157), in one readable module.

A decoder-only transformer models the flattened latent grid (t, h, w) in raster order (t slowest,
w fastest); with a multiple-codebook VQ-VAE (vqvae.n_codebooks = C > 1) the grid is (t, h, w, C), its codebook
axis fastest and treated as a fourth position axis. What makes it VideoGPT rather than a plain GPT:

- the input at a position is the frozen VQ-VAE codebook vector of the *previous* token, projected
  to the model width (no learned token table), and position 0 gets a learned start vector (SOS);
- positions are encoded by one table per grid axis (t, h, w[, C]) whose rows are *concatenated*, so the
  model sees the grid structure instead of a flat index;
- optional conditioning: on a class label or on the clip's per-frame actions through conditional
  LayerNorms, and/or on the first frames of the clip through a 3D ResNet and a cross-attention layer
  in every block (`frames+actions`: BAIR's action-conditional setting).

Besides the training forward pass the module offers incremental decoding for the sampler
(`init_cache` + `cross_kv` + `step`), which costs O(prefix) per position instead of a full forward
pass, `prefill` to put a known prefix into the cache in one batched pass (the sliding-window sampler's
kept latent frames), and FLOP / parameter counts for benchmarks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from videogpt.decode_kernel import KEY_BLOCK, decode_attention, decode_attention_reference, kernel_applies, key_rows
from videogpt.saved import SavedModel
from videogpt.position import BroadcastPosEmbed
from videogpt.resnet3d import DOWNSAMPLE, ResNet3d

CONDITIONS = ("none", "class", "frames", "actions", "frames+actions")
FRAME_CONDITIONS = ("frames", "frames+actions")    # cross-attention to the first frames
ACTION_CONDITIONS = ("actions", "frames+actions")  # conditional LayerNorms read the clip's actions


@dataclass
class PriorConfig:
    """Everything needed to rebuild a Prior; the defaults are the paper's. Names equal the keys of
    `prior:` in params.yaml where they overlap; latent_shape / n_codes / embedding_dim come from the
    VQ-VAE, n_classes and action_shape from the data, frame_shape from data.resolution (see `from_params`)."""
    latent_shape: tuple[int, ...]        # (t, h, w), or (t, h, w, C) over C codebooks of n_codes each
    n_codes: int
    embedding_dim: int
    n_layer: int = 8
    n_head: int = 4
    n_embd: int = 576
    dropout: float = 0.2
    attn_dropout: float = 0.3
    condition: str = "none"              # one of CONDITIONS
    n_classes: int = 0                   # used when condition == 'class'
    action_shape: Optional[tuple[int, int]] = None  # (frames per clip, values per action): with actions
    n_cond_frames: int = 1               # the rest: used when the condition has frames
    frame_shape: Optional[tuple[int, int]] = None  # (H, W) of the conditioning frames
    resnet_depth: int = 18
    resnet_dim: int = 240
    resnet_width: int = 64               # base width of the ResNet (64 = the paper); smaller = faster on CPU

    def __post_init__(self):
        # config.json round-trips tuples as lists
        self.latent_shape = tuple(int(s) for s in self.latent_shape)
        if self.frame_shape is not None:
            self.frame_shape = tuple(int(s) for s in self.frame_shape)
        if self.action_shape is not None:
            self.action_shape = tuple(int(s) for s in self.action_shape)
        self.validate()

    @classmethod
    def from_params(cls, prior, vqvae_config, *, n_classes: int, frame_shape, action_shape=None) -> "PriorConfig":
        """The config of a `prior:` params section (videogpt.config.PriorParams) over the codes of a VQ-VAE
        with `vqvae_config`; the section's training keys (lr, max_steps, ...) are not part of the model.
        action_shape: (frames per clip, values per action) of the data's actions, for action conditioning."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(latent_shape=vqvae_config.latent_shape, n_codes=vqvae_config.n_codes,
                   embedding_dim=vqvae_config.embedding_dim, n_classes=n_classes, frame_shape=tuple(frame_shape),
                   action_shape=action_shape,
                   **{f.name: getattr(prior, f.name) for f in dataclasses.fields(prior) if f.name in names})

    def validate(self) -> None:
        def fail(key, msg):
            raise ValueError(f"prior.{key}: {msg}")
        if len(self.latent_shape) not in (3, 4) or min(self.latent_shape) < 1:
            fail("latent_shape", f"{self.latent_shape} must be three or four positive sizes (t, h, w[, codebooks])")
        if self.n_codes < 2:
            fail("n_codes", f"{self.n_codes} must be >= 2")
        if self.embedding_dim < 1:
            fail("embedding_dim", f"{self.embedding_dim} must be >= 1")
        if self.n_layer < 1:
            fail("n_layer", f"{self.n_layer} must be >= 1")
        if self.n_head < 1:
            fail("n_head", f"{self.n_head} must be >= 1")
        n_axes = len(self.latent_shape)
        if self.n_embd < n_axes:
            fail("n_embd", f"{self.n_embd} must be >= {n_axes} (the position embedding splits it over {n_axes} axes)")
        if self.n_embd % self.n_head:
            fail("n_embd", f"{self.n_embd} is not divisible by prior.n_head={self.n_head}")
        for key in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                fail(key, f"{getattr(self, key)} must be in [0, 1]")
        if self.condition not in CONDITIONS:
            fail("condition", f"{self.condition!r} is not one of {', '.join(CONDITIONS)}")
        if self.condition == "class" and self.n_classes < 2:
            fail("n_classes", f"{self.n_classes}: class conditioning needs at least 2 classes "
                              "(does the dataset have class labels?)")
        if self.uses_actions and (self.action_shape is None or len(self.action_shape) != 2
                                  or min(self.action_shape) < 1):
            fail("action_shape", f"{self.action_shape}: action conditioning needs (frames per clip, values per "
                                 "action) (does the dataset have actions?)")
        if self.uses_actions and self.action_shape[0] % self.latent_shape[0]:
            fail("action_shape", f"{self.action_shape}: the clip's {self.action_shape[0]} frames are not a whole "
                                 f"number of latent frames ({self.latent_shape[0]})")
        if self.uses_frames:
            if self.n_cond_frames < 1:
                fail("n_cond_frames", f"{self.n_cond_frames} must be >= 1")
            if self.frame_shape is None or len(self.frame_shape) != 2:
                fail("frame_shape", f"{self.frame_shape}: frame conditioning needs the (H, W) of the frames")
            if any(s < DOWNSAMPLE or s % DOWNSAMPLE for s in self.frame_shape):
                fail("frame_shape", f"{self.frame_shape}: H and W must be multiples of {DOWNSAMPLE} "
                                    "(the ResNet downsamples space by 4)")
            if self.resnet_depth not in (18, 34):
                fail("resnet_depth", f"{self.resnet_depth} must be 18 or 34")
            if self.resnet_dim < 3:
                fail("resnet_dim", f"{self.resnet_dim} must be >= 3 (its position embedding splits it over 3 axes)")
            if self.resnet_width < 1:
                fail("resnet_width", f"{self.resnet_width} must be >= 1")

    @property
    def uses_frames(self) -> bool:
        return self.condition in FRAME_CONDITIONS

    @property
    def uses_actions(self) -> bool:
        return self.condition in ACTION_CONDITIONS

    @property
    def cond_dim(self) -> int:
        """Size of the vector the conditional LayerNorms read: one-hot class or flattened actions (0 = none)."""
        if self.condition == "class":
            return self.n_classes
        return math.prod(self.action_shape) if self.uses_actions else 0

    @property
    def seq_len(self) -> int:
        return math.prod(self.latent_shape)

    @property
    def n_codebooks(self) -> int:
        """C: codebooks of the VQ-VAE, the size of the fourth latent axis (1 without it)."""
        return self.latent_shape[3] if len(self.latent_shape) == 4 else 1

    @property
    def cond_shape(self) -> tuple[int, int, int]:
        """(n_cond_frames, H/4, W/4): the grid of conditioning features."""
        H, W = self.frame_shape
        return (self.n_cond_frames, H // DOWNSAMPLE, W // DOWNSAMPLE)


# --------------------------------------------------------------------------------------------
# Building blocks


class Norm(nn.Module):
    """LayerNorm; with cond_dim > 0 the conditional LayerNorm of the paper: the gain and the bias are
    affine functions of a condition vector c (B, cond_dim), gain = 1 + W_g c, bias = W_b c. c is a
    one-hot class label (one_hot=True) or a dense vector such as the clip's normalised actions."""

    def __init__(self, dim: int, cond_dim: int = 0, one_hot: bool = True):
        super().__init__()
        self.cond_dim = cond_dim
        self.ln = nn.LayerNorm(dim, elementwise_affine=cond_dim == 0)
        if cond_dim:
            self.to_gain = nn.Linear(cond_dim, dim, bias=False)
            self.to_bias = nn.Linear(cond_dim, dim, bias=False)
            # W_b keeps PyTorch's default init, so conditions differ from the first step. For one-hot
            # classes the reference initialises W_g to the constant 1/sqrt(n_classes) (gain 1 + 1/sqrt(n)
            # for every class at init). For a dense zero-mean vector that constant would make the gain
            # 1 + sum(c)/sqrt(n), about 1 +- 1 from clip to clip, so there W_g starts at zero (gain 1).
            if one_hot:
                nn.init.constant_(self.to_gain.weight, 1.0 / math.sqrt(cond_dim))
            else:
                nn.init.zeros_(self.to_gain.weight)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.ln(x)
        if not self.cond_dim:
            return y
        shape = (c.shape[0],) + (1,) * (x.dim() - 2) + (-1,)  # broadcast over the positions
        return y * (1 + self.to_gain(c)).view(shape) + self.to_bias(c).view(shape)

    def affine(self, c: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, bias) after the normalisation, for decoding: the LayerNorm's own (D,) weight and bias, or the
        conditional ones (B, D) of the condition c, computed once per batch instead of at every position."""
        if not self.cond_dim:
            return self.ln.weight, self.ln.bias
        return 1 + self.to_gain(c), self.to_bias(c)

    def decode(self, x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`forward` of one position x (B, D) with the precomputed `affine(c)`: the same arithmetic."""
        if not self.cond_dim:
            return F.layer_norm(x, self.ln.normalized_shape, *affine, self.ln.eps)
        return F.layer_norm(x, self.ln.normalized_shape, None, None, self.ln.eps).mul_(affine[0]).add_(affine[1])


class DecodeWeights(NamedTuple):
    """What a block's decode step reads besides the cache, prepared once per batch (`of`): the self-attention
    and MLP weight matrices, their biases, and each norm's (gain, bias) (`Norm.affine`; for conditional
    LayerNorms computed from the batch's condition here, not per position).
    Two layouts of the matrices (`in_out`):
    - True (the eager step): contiguous (in, out) copies in the step's dtype, multiplied by MKL's GEMM, which
      does a few rows (the batch) times such a matrix about 20% faster than nn.Linear's (out, in) weight
      (measured at 4 x 252).
    - False (the step compiled on the CPU): the modules' own (out, in) Parameters, cast to the step's dtype
      inside the step. Inductor's freezing (`sampling.CPU_COMPILE_CONFIG`) turns Parameters into constants,
      folds the cast, and packs each matrix once for its generated few-row GEMM kernel, which streams the
      weights about 3x faster than MKL at 4 x 252 (measured): copies made here would be ordinary inputs,
      which it cannot pack."""
    qkv: torch.Tensor
    proj: torch.Tensor
    fc: torch.Tensor
    mlp_proj: torch.Tensor
    proj_bias: torch.Tensor
    fc_bias: torch.Tensor
    mlp_proj_bias: torch.Tensor
    norm_attn: tuple
    norm_cross: Optional[tuple]
    norm_mlp: tuple
    in_out: bool = True

    @classmethod
    def of(cls, block: "Block", c: Optional[torch.Tensor], dtype: torch.dtype, in_out: bool = True) -> "DecodeWeights":
        """The block's decode weights in `dtype` (for the model's own dtype, the biases and the unconditional
        norms' parameters are the module's tensors, not copies)."""
        linears = (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj)
        norm = lambda n: tuple(t.to(dtype) for t in n.affine(c)) if n is not None else None
        matrices = (lin.weight.to(dtype).t().contiguous() if in_out else lin.weight for lin in linears)
        return cls(*matrices, *(b.to(dtype) for b in (block.attn.proj.bias, block.mlp.fc.bias, block.mlp.proj.bias)),
                   norm(block.norm_attn), norm(block.norm_cross), norm(block.norm_mlp), in_out)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, in) times one of the matrices above (+ bias), whichever its layout."""
        if not self.in_out:
            return F.linear(x, weight.to(x.dtype), bias)
        return torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)


class KVCache:
    """Keys and values of every self-attention layer, preallocated for the whole sequence, plus the
    per-batch constants a decode step reads: everything `Prior.step` needs besides the new token and
    its position, in tensors whose shapes never change while decoding (so a compiled step is traced
    once per batch size).

    A layer's keys and values sit in one buffer, `layers[i]` (2, batch, n_head, seq_len, head_dim) (for
    the compiled CPU step, a pair: compiled_cpu below), so that one copy stores both per step. One buffer
    per layer, not views of a common one: a compiled step that writes into views of one base made
    Inductor copy the whole base at every write (8x slower than eager, measured). Keys before values
    (not interleaved per sequence) so that a prefix [:n] of one layer's keys is a (batch * n_head)
    batch of matrices with one stride, which a batched matmul reads in place (interleaved, it copied
    the whole prefix at every step: 3x slower). It starts zeroed:
    the static-shape step reads the whole buffer under a position mask, and masked probabilities
    (exact zeros) times uninitialised memory could be NaN. Memory: 2 * n_layer * batch * seq_len * n_embd
    elements.

    compiled_cpu: laid out for the step compiled on the CPU, whose attention is the hand-written kernel
    videogpt.decode_kernel.decode_attention over the filled prefix [:n] (n symbolic). A layer is then a pair of
    buffers whose prefix is one contiguous run per (sequence, head), which the memory's prefetcher streams:
    keys in blocks of KEY_BLOCK, (batch, n_head, blocks, head_dim, KEY_BLOCK) (a block's scores are one vector
    accumulated over head_dim), and values (batch, n_head, blocks * KEY_BLOCK, head_dim). (The layout before,
    values transposed, read the prefix as head_dim short rows with gaps: 7-10 GB/s from memory at half a
    sequence.) Two buffers, not two views of one (one viewed two ways made Inductor copy it whole at every
    step). blocks = seq_len // KEY_BLOCK + 1: at least one spare slot after the sequence, so no prefix is ever
    the whole buffer, whose layout (contiguous) the compiler would tell apart and compile again for."""

    def __init__(self, n_layer: int, batch: int, n_head: int, seq_len: int, head_dim: int,
                 device=None, dtype=None, compiled_cpu: bool = False):
        blocks = seq_len // KEY_BLOCK + 1  # compiled_cpu only
        slots = blocks * KEY_BLOCK if compiled_cpu else seq_len
        zeros = lambda *shape: torch.zeros(shape, device=device, dtype=dtype)
        self.layers = [(zeros(batch, n_head, blocks, head_dim, KEY_BLOCK), zeros(batch, n_head, slots, head_dim))
                       if compiled_cpu else zeros(2, batch, n_head, slots, head_dim) for _ in range(n_layer)]
        self.batch, self.seq_len = batch, seq_len
        self.key_index = torch.arange(slots, device=device)  # for the position mask
        self.device = self.key_index.device
        # Set by Prior.init_cache, in the decode step's dtype:
        self.sos: Optional[torch.Tensor] = None          # (n_embd,) the start vector
        self.head: Optional[torch.Tensor] = None         # (n_codes, n_embd) the output head's weight
        self.code_inputs: Optional[torch.Tensor] = None  # (n_codes, n_embd)
        self.positions: Optional[torch.Tensor] = None    # (seq_len, n_embd)
        self.weights: list[DecodeWeights] = []           # one per layer
        self.cond: Optional[torch.Tensor] = None         # (batch, cond_dim) for conditional LayerNorms, or None
        self.norm_out: tuple = ()                        # the output norm's (gain, bias), Norm.affine
        self.cross_kv: list = []                         # per layer: cross-attention (k, v) of the frames, or None

    @property
    def k(self) -> torch.Tensor:
        """All layers' keys, (n_layer, batch, n_head, seq_len, head_dim) (a copy), whichever the layout."""
        return torch.stack([key_rows(kv[0])[:, :, :self.seq_len] if isinstance(kv, tuple)
                            else kv[0, :, :, :self.seq_len] for kv in self.layers])

    @property
    def v(self) -> torch.Tensor:
        """All layers' values, (n_layer, batch, n_head, seq_len, head_dim) (a copy), whichever the layout."""
        return torch.stack([kv[1][:, :, :self.seq_len] if isinstance(kv, tuple)
                            else kv[1, :, :, :self.seq_len] for kv in self.layers])


def dropout_keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """Bool mask, True with probability 1 - p (to within 2^-32), drawn as 32-bit integers: two per
    64-bit word of `random_`. On the CPU this is several times faster than `bernoulli_` (the
    cost of PyTorch's own attention dropout), with the same distribution."""
    threshold = -2 ** 31 + round(p * 2 ** 32)  # P(uniform int32 >= threshold) = 1 - p
    if threshold >= 2 ** 31:  # p = 1: nothing is kept (and the threshold is past the int32 range)
        return torch.zeros(shape, dtype=torch.bool, device=device)
    if torch.compiler.is_compiling():  # in-place random_ breaks the graph; compiled code draws its own numbers
        return torch.rand(shape, device=device) >= p
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    return words.view(torch.int32)[:n].view(shape) >= threshold


def causal_attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
                                  block: int = 128) -> torch.Tensor:
    """Causal softmax attention with dropout p on the attention probabilities, as
    F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p) computes it; (B, H, L, hd)
    in and out. PyTorch's CPU kernels have no fused path with dropout, and its unfused one builds
    the full L x L matrices (half of them masked). Here queries go in blocks of `block`, each against
    the keys up to its last position only, so the masked half is never computed nor stored, and the
    dropout mask comes from `dropout_keep_mask`. Its 1 / (1 - p) scaling is applied to the output."""
    B, H, L, hd = q.shape
    if p >= 1.0:
        return torch.zeros_like(q)
    q, k, v = (t.reshape(B * H, L, hd) for t in (q, k, v))
    q = q * hd ** -0.5
    # Additive causal mask of a diagonal block: -inf above the diagonal.
    diag = torch.full((block, block), -math.inf, device=q.device, dtype=q.dtype).triu_(1)
    outs = []
    for start in range(0, L, block):
        stop = min(L, start + block)
        n = stop - start
        mask = F.pad(diag[:n, :n], (start, 0))  # (n, stop): keys before the block all visible
        scores = torch.baddbmm(mask, q[:, start:stop], k[:, :stop].transpose(1, 2))
        probs = scores.softmax(-1) * dropout_keep_mask(scores.shape, p, q.device)
        outs.append(torch.bmm(probs, v[:, :stop]))
    return (torch.cat(outs, dim=1) * (1.0 / (1.0 - p))).view(B, H, L, hd)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention (q/k/v without bias, output projection with bias)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.n_head, self.attn_dropout = cfg.n_head, cfg.attn_dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # q, k, v fused in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        # The reference's init: q/k/v ~ N(0, 1/sqrt(D)), output ~ N(0, 1/sqrt(D * n_layer)), so the
        # residual stream's variance grows slowly with depth.
        nn.init.normal_(self.qkv.weight, std=1.0 / math.sqrt(cfg.n_embd))
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(cfg.n_embd * cfg.n_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training / full pass, x (B, L, D). The causal mask is implicit (no L x L tensor is built)."""
        B, L, D = x.shape
        q, k, v = (t.view(B, L, self.n_head, -1).transpose(1, 2) for t in self.qkv(x).split(D, dim=-1))
        p = self.attn_dropout if self.training else 0.0
        if p > 0 and x.device.type == "cpu":  # PyTorch's CPU kernels have no fused path with dropout
            y = causal_attention_with_dropout(q, k, v, p)
        else:  # fused (flash / memory-efficient) kernels; on CUDA with dropout too
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))

    def decode(self, x: torch.Tensor, kv: torch.Tensor, pos, weights: DecodeWeights,
               future: Optional[torch.Tensor], n: Optional[int]) -> torch.Tensor:
        """Incremental decoding of position `pos`, x (B, D): store its key and value in this layer's cache
        kv (2, B, n_head, slots, head_dim), or the pair (keys in blocks, values) of KVCache's compiled_cpu
        layout, then let the one query attend over the cache (`Prior.step`'s three forms; the pair takes
        the first two). pos an int (eager): written by a plain index, and the attention reads exactly the
        filled prefix [0, n) (n = pos + 1); a 0-d tensor: written by index_copy_, and the attention reads
        the prefix [0, n) (n given: the CPU's compiled step, n symbolic) or, with n None, the whole cache
        with the keys after pos masked (`future`, (slots,) bool: static shapes for CUDA graphs).
        One query row needs no fused attention kernel: a plain matmul-softmax-matmul, as two batched
        products over (B * n_head) matrices that are views of the cache, not copies (PyTorch's CPU flash
        kernel cost 37% of a step here, mostly per-call overhead); on the pair, the hand-written
        decode_kernel.decode_attention (float32; other dtypes its PyTorch reference). Returns (B, D), before
        the output projection."""
        B, D = x.shape
        H = self.n_head
        hd = D // H
        qkv = weights.linear(x, weights.qkv)  # (B, 3D): q | k | v, each head after head
        new = qkv[:, D:].view(B, 2, H, hd).transpose(0, 1)  # (2, B, H, hd): keys and values, one copy
        if isinstance(kv, tuple):  # the CPU's compiled step (KVCache compiled_cpu), n symbolic
            if future is not None:
                raise ValueError("the whole-cache masked step (n None) needs a cache made without for_compiled_cpu")
            keys, values = kv  # (B, H, blocks, hd, KEY_BLOCK), (B, H, slots, hd)
            index = pos.view(1) if isinstance(pos, torch.Tensor) else torch.tensor([pos], device=keys.device)
            torch.ops.aten.index_put_(keys, [None, None, index // KEY_BLOCK, None, index % KEY_BLOCK],
                                      new[0].unsqueeze(0).to(keys.dtype))  # (1, B, H, hd): indexed dims first
            values.index_copy_(2, index, new[1].unsqueeze(2).to(values.dtype))
            q = qkv[:, :D].view(B, H, hd) * hd ** -0.5
            attend = decode_attention if kernel_applies(q, keys) else decode_attention_reference
            return attend(q, keys, values, n).view(B, D)
        if isinstance(pos, int):
            kv.select(3, pos).copy_(new)
        else:
            kv.index_copy_(3, pos.view(1), new.unsqueeze(3).to(kv.dtype))
        if future is not None:
            n = kv.shape[3]
        # (B * H, n, hd) views: the cache's batch stride is n_head times its head stride
        keys, values = (kv[i, :, :, :n].reshape(B * H, n, hd).to(x.dtype) for i in range(2))
        scores = torch.bmm(qkv[:, :D].reshape(B * H, 1, hd), keys.transpose(1, 2)).mul_(hd ** -0.5)
        if future is not None:
            scores = scores.masked_fill(future, -math.inf)
        return torch.bmm(scores.softmax(-1), values).view(B, D)

    def prefill(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """The first P positions x (B, P, D) of an empty cache in one pass: store their keys and values in
        this layer's cache kv (either layout, `decode`) and attend causally among them (eval mode).
        Returns (B, P, D), after the output projection, as `forward` would."""
        B, P, D = x.shape
        q, k, v = (t.view(B, P, self.n_head, -1).transpose(1, 2) for t in self.qkv(x).split(D, dim=-1))
        if isinstance(kv, tuple):  # KVCache compiled_cpu: keys in blocks
            full, rest = divmod(P, KEY_BLOCK)
            kv[0][:, :, :full] = k[:, :, :full * KEY_BLOCK].unflatten(2, (full, KEY_BLOCK)).transpose(-1, -2)
            kv[0][:, :, full, :, :rest] = k[:, :, full * KEY_BLOCK:].transpose(-1, -2)
            kv[1][:, :, :P] = v
        else:
            kv[0, :, :, :P] = k
            kv[1, :, :, :P] = v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, P, D))


class CrossAttention(nn.Module):
    """Attention from the token stream to the conditioning features (not causal: every token may see
    every conditioning cell). Keys/values depend only on the frames, so the sampler computes them once."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.kv = nn.Linear(cfg.resnet_dim, 2 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        nn.init.normal_(self.q.weight, std=1.0 / math.sqrt(cfg.n_embd))
        nn.init.normal_(self.kv.weight, std=1.0 / math.sqrt(cfg.resnet_dim))
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(cfg.n_embd * cfg.n_layer))

    def keys_values(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, resnet_dim) features -> k, v of shape (B, n_head, S, head_dim)."""
        B, S, _ = cond.shape
        k, v = self.kv(cond).view(B, S, 2, self.n_head, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, L, D = x.shape
        q = self.q(x).view(B, L, self.n_head, -1).transpose(1, 2)
        # Attention dropout is 0 here, as in the reference.
        y = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, [cross-attention], MLP, each a residual branch."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        norm = lambda: Norm(cfg.n_embd, cfg.cond_dim, one_hot=cfg.condition == "class")
        self.norm_attn, self.attn = norm(), SelfAttention(cfg)
        self.norm_cross = self.cross = None
        if cfg.uses_frames:
            self.norm_cross, self.cross = norm(), CrossAttention(cfg)
        self.norm_mlp, self.mlp = norm(), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, c=None, cross_kv=None):
        """x (B, L, D) -> (B, L, D)."""
        x = x + self.drop(self.attn(self.norm_attn(x, c)))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.norm_cross(x, c), cross_kv))
        return x + self.drop(self.mlp(self.norm_mlp(x, c)))

    def decode(self, x, cross_kv, kv: torch.Tensor, pos, w: DecodeWeights, future: Optional[torch.Tensor],
               n: Optional[int]):
        """One position x (B, D) -> (B, D) in eval mode, with this layer's cache kv and its prepared weights
        (SelfAttention.decode, DecodeWeights). The same sums as `forward` (a + b == b + a exactly)."""
        y = self.attn.decode(self.norm_attn.decode(x, w.norm_attn), kv, pos, w, future, n)
        x = w.linear(y, w.proj, w.proj_bias).add_(x)
        if self.cross is not None:  # in the module's dtype (the cross-attention keys / values are in it)
            h = self.norm_cross.decode(x, w.norm_cross).to(self.cross.q.weight.dtype).unsqueeze(1)
            x = x + self.cross(h, cross_kv).squeeze(1).to(x.dtype)
        h = F.gelu(w.linear(self.norm_mlp.decode(x, w.norm_mlp), w.fc, w.fc_bias))
        return w.linear(h, w.mlp_proj, w.mlp_proj_bias).add_(x)

    def prefill(self, x, c, cross_kv, kv: torch.Tensor):
        """The first P positions x (B, P, D) -> (B, P, D) in eval mode, filling this layer's cache kv
        (SelfAttention.prefill)."""
        x = x + self.attn.prefill(self.norm_attn(x, c), kv)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x, c), cross_kv)
        return x + self.mlp(self.norm_mlp(x, c))


# --------------------------------------------------------------------------------------------
# The prior


class Prior(nn.Module, SavedModel):
    """GPT prior. `codebook` (C·K, D) is the VQ-VAE's codebook table (`VQVAE.code_table`: code k of codebook c at
    row c·K + k; (K, D) with one codebook); it is copied into a frozen buffer (saved with the model, so a prior
    checkpoint is self-contained, and never trained).
    `Prior.from_pretrained(folder or hub id)` / `save_pretrained(folder)` load and save it."""

    card_title = "VideoGPT prior"

    def __init__(self, config: PriorConfig, codebook: torch.Tensor):
        super().__init__()
        self.config = cfg = config
        codebook = torch.as_tensor(codebook)
        rows = cfg.n_codebooks * cfg.n_codes
        if tuple(codebook.shape) != (rows, cfg.embedding_dim):
            raise ValueError(f"codebook has shape {tuple(codebook.shape)}; the config expects "
                             f"(codebooks * n_codes, embedding_dim) = ({rows}, {cfg.embedding_dim})")
        self.register_buffer("codebook", codebook.detach().clone().float())
        D = cfg.n_embd

        self.fc_in = nn.Linear(cfg.embedding_dim, D, bias=False)
        nn.init.normal_(self.fc_in.weight, std=0.02)
        self.sos = nn.Parameter(torch.randn(D) * 0.02)
        self.pos_emb = BroadcastPosEmbed(cfg.latent_shape, D)

        self.frame_encoder = self.cond_pos_emb = None
        if cfg.uses_frames:
            self.frame_encoder = ResNet3d(cfg.resnet_depth, cfg.resnet_dim, cfg.resnet_width)
            self.cond_pos_emb = BroadcastPosEmbed(cfg.cond_shape, cfg.resnet_dim)

        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_out = Norm(D, cfg.cond_dim, one_hot=cfg.condition == "class")
        if cfg.uses_actions:
            # Per-value mean and std of the actions over the training split (set_action_stats), saved with
            # the model, so every user of a checkpoint normalises actions the same way.
            self.register_buffer("action_mean", torch.zeros(cfg.action_shape[1]))
            self.register_buffer("action_std", torch.ones(cfg.action_shape[1]))
        self.head = nn.Linear(D, cfg.n_codes, bias=False)
        # Zero head: every code is equally likely at init (loss = ln K), a calm start for training.
        nn.init.zeros_(self.head.weight)
        self.checkpoint_blocks = False  # set_activation_checkpointing

    @classmethod
    def from_saved(cls, config: dict, state: dict) -> "Prior":
        return cls(PriorConfig(**config), state["codebook"])

    def set_activation_checkpointing(self, on: bool) -> None:
        """In `forward`, keep only each block's input and recompute its activations in the backward pass
        (trainer.checkpoint_activations; torch.utils.checkpoint replays the dropout masks): the same
        gradients, about 1/n_layer of the activation memory, one more forward pass of compute."""
        self.checkpoint_blocks = bool(on)

    def check_codebook(self, vqvae) -> None:
        """A prior predicts the codes of one VQ-VAE: refuse to pair it with another."""
        if not torch.equal(self.codebook.cpu(), vqvae.code_table().detach().float().cpu()):
            raise ValueError("this prior was trained on the codes of another VQ-VAE (their codebooks differ); "
                             "load the VQ-VAE it was trained with")

    def code_rows(self, tokens: torch.Tensor, first) -> torch.Tensor:
        """Rows of the codebook table of tokens (B, P) at flat positions first, first + 1, ...: code k at a
        position of codebook c (the position's index along the last latent axis, the fastest) is row c·K + k.
        With one codebook the tokens themselves. first: an int or a 0-d tensor (the decode step's position)."""
        C = self.config.n_codebooks
        if C == 1:
            return tokens
        offsets = (torch.arange(tokens.shape[1], device=tokens.device) + first) % C * self.config.n_codes
        return tokens + offsets

    # ---- conditioning ------------------------------------------------------------------------

    def set_action_stats(self, mean, std) -> None:
        """Store the per-value mean and std (action_shape[1],) of the training actions; a std of 0 (a value
        that never changes) is stored as 1."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        A = self.config.action_shape[1]
        if mean.shape != (A,) or std.shape != (A,) or not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError(f"action statistics must be finite vectors of {A} values; got {tuple(mean.shape)}, "
                             f"{tuple(std.shape)}")
        self.action_mean.copy_(mean)
        self.action_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def action_vector(self, actions: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """(B, frames, A) actions of the clips -> (B, frames * A): each value standardised with the training
        split's mean and std (z-score), then flattened frame by frame. Not checked for NaN here (that
        would cost a device sync per decoding step): the data checks and the sampler do it once."""
        T, A = self.config.action_shape
        if actions is None:
            raise ValueError(f"this prior is action-conditional (prior.condition={self.config.condition}): "
                             f"pass actions=(B, {T}, {A})")
        actions = torch.as_tensor(actions, device=self.sos.device)
        if tuple(actions.shape) != (batch, T, A):
            raise ValueError(f"actions must have shape ({batch}, {T}, {A}) (clips, frames per clip, values per "
                             f"action); got {tuple(actions.shape)}")
        z = (actions.float() - self.action_mean) / self.action_std
        return z.reshape(batch, T * A).to(self.sos.dtype)

    def _condition_vector(self, label: Optional[torch.Tensor], batch: int,
                      actions: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The conditional LayerNorms' vector: one-hot label (B, n_classes), the normalised actions
        (B, frames * A), or None for priors with neither (a label or actions given to those are ignored,
        so data loaders may always pass them)."""
        if self.config.uses_actions:
            return self.action_vector(actions, batch)
        if self.config.condition != "class":
            return None
        if label is None:
            raise ValueError("this prior is class-conditional (prior.condition=class): pass label=(B,) class ids")
        label = torch.as_tensor(label, device=self.sos.device)
        if label.shape != (batch,):
            raise ValueError(f"label must have shape ({batch},); got {tuple(label.shape)}")
        return F.one_hot(label.long(), self.config.n_classes).to(self.sos.dtype)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, n_cond_frames, H, W) frames in [-0.5, 0.5] -> (B, S, resnet_dim) position-embedded
        features, S = n_cond_frames * H/4 * W/4."""
        cfg = self.config
        expected = (3, cfg.n_cond_frames, *cfg.frame_shape)
        if frames is None:
            raise ValueError("this prior is frame-conditional (prior.condition=frames): "
                             f"pass frames=(B, {', '.join(map(str, expected))})")
        if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"frames must have shape (B, {', '.join(map(str, expected))}); got {tuple(frames.shape)}")
        feats = self.frame_encoder(frames.to(self.sos.device, self.sos.dtype)) + self.cond_pos_emb()
        return feats.flatten(1, 3)

    def cross_kv(self, frames: Optional[torch.Tensor]) -> list:
        """Per-layer cross-attention keys/values of the conditioning frames ([None] * n_layer for a
        prior that is not frame-conditional). Computed once per batch; reused at every position."""
        if not self.config.uses_frames:
            return [None] * self.config.n_layer
        cond = self.encode_frames(frames)
        return [block.cross.keys_values(cond) for block in self.blocks]

    # ---- training ----------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, label: Optional[torch.Tensor] = None,
                frames: Optional[torch.Tensor] = None, actions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, *latent_shape) long -> logits (B, *latent_shape, K); logits at p predict token p from tokens < p."""
        cfg = self.config
        if tokens.dim() != 1 + len(cfg.latent_shape) or tuple(tokens.shape[1:]) != cfg.latent_shape:
            raise ValueError(f"tokens must have shape (B, {', '.join(map(str, cfg.latent_shape))}); "
                             f"got {tuple(tokens.shape)}")
        B, L = tokens.shape[0], cfg.seq_len
        c = self._condition_vector(label, B, actions)
        kvs = self.cross_kv(frames)

        x = self.fc_in(F.embedding(self.code_rows(tokens.reshape(B, L).long(), 0), self.codebook))  # (B, L, D)
        # Right shift: position p sees token p-1; position 0 sees the start vector.
        x = torch.cat([self.sos.to(x.dtype).expand(B, 1, -1), x[:, :-1]], dim=1)
        x = x + self.pos_emb().reshape(L, -1)
        for block, kv in zip(self.blocks, kvs):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(block, x, c, kv, use_reentrant=False)
            else:
                x = block(x, c, kv)
        logits = self.head(self.norm_out(x, c))
        return logits.view(B, *cfg.latent_shape, cfg.n_codes)

    def loss(self, tokens: torch.Tensor, label: Optional[torch.Tensor] = None,
             frames: Optional[torch.Tensor] = None, actions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean cross-entropy over all tokens, in nats, computed in float32 (bits/dim = loss / ln 2)."""
        logits = self(tokens, label, frames, actions)
        return F.cross_entropy(logits.float().reshape(-1, self.config.n_codes), tokens.reshape(-1).long())

    # ---- incremental decoding (used by videogpt.sampling) ------------------------------------

    def init_cache(self, batch: int, device=None, dtype=None, kv_dtype=None, *, label: Optional[torch.Tensor] = None,
                   cond_kv: Optional[list] = None, actions: Optional[torch.Tensor] = None,
                   for_compiled_cpu: bool = False) -> KVCache:
        """An empty cache for decoding `batch` sequences with `step`. It also holds what `step` reads
        instead of recomputing it per position: the input vector of every code (fc_in of its codebook
        row), the position embedding of every position, each block's DecodeWeights, and the batch's
        conditioning (the conditional LayerNorms' vector of label / actions; cond_kv = `cross_kv(frames)`
        for a frame-conditional prior). They are computed here, from the current weights: do not
        change the weights while decoding with this cache. dtype: of the decode step, its weights and
        activations (default: the model's; the cross-attention to frames stays in the model's); kv_dtype:
        of the keys and values (default: dtype). for_compiled_cpu: laid out for the step compiled on the CPU
        (`sampling.compiled_decode_step`): the modules' own weight Parameters (DecodeWeights, in_out=False)
        and its key/value layout (KVCache compiled_cpu)."""
        cfg = self.config
        dtype = dtype if dtype is not None else self.sos.dtype
        cache = KVCache(cfg.n_layer, batch, cfg.n_head, cfg.seq_len, cfg.n_embd // cfg.n_head,
                        device=device if device is not None else self.sos.device,
                        dtype=kv_dtype if kv_dtype is not None else dtype, compiled_cpu=for_compiled_cpu)
        cache.sos, cache.head = self.sos.to(dtype), self.head.weight.to(dtype)
        cache.code_inputs = self.fc_in(self.codebook).to(dtype)
        cache.positions = self.pos_emb().reshape(cfg.seq_len, -1).to(dtype)
        cache.cond = self._condition_vector(label, batch, actions)
        cache.weights = [DecodeWeights.of(block, cache.cond, dtype, in_out=not for_compiled_cpu) for block in self.blocks]
        cache.norm_out = tuple(t.to(dtype) for t in self.norm_out.affine(cache.cond))
        if cond_kv is None and cfg.uses_frames:
            raise ValueError("frame-conditional prior: pass cond_kv=prior.cross_kv(frames)")
        cache.cross_kv = cond_kv if cond_kv is not None else [None] * cfg.n_layer
        return cache

    def step(self, prev_token: Optional[torch.Tensor], pos, cache: KVCache, n: Optional[int] = None) -> torch.Tensor:
        """Logits (B, K) of flat position `pos`, given the token decoded at pos-1 (prev_token, (B,) long;
        ignored at pos 0, where the start vector is the input; None = zeros). Stores the position's keys
        and values in `cache`; positions must be fed in order 0, 1, 2, ... (or after a `prefill`).
        Dropout is not applied (call it in eval mode).

        pos, in one of three forms, all giving the same logits up to float rounding (masked keys add exact
        zeros, in another summation order):
        - an int (eager): the attention reads exactly the filled prefix, the fewest bytes;
        - a 0-d long tensor on the cache's device and n = pos + 1, an int: the same prefix, the position
          as a tensor and n symbolic, so that one compiled graph serves every position (the CPU's
          compiled step, `sampling.compiled_decode_step`);
        - a 0-d long tensor and n None (static shapes): every position runs the same graph, which reads
          the whole cache under a position mask (the CUDA graphs' compiled step; a cache made without
          for_compiled_cpu)."""
        B = cache.batch
        if prev_token is None:
            prev_token = torch.zeros(B, dtype=torch.long, device=cache.device)
        # Only the new token is embedded: one row of the precomputed input table; the start vector at 0.
        prev = prev_token.reshape(B)
        if self.config.n_codebooks > 1:  # its row in the table of all codebooks (code_rows)
            prev = self.code_rows(prev[:, None], pos - 1)[:, 0]
        if isinstance(pos, torch.Tensor):
            x = torch.where(pos == 0, cache.sos, F.embedding(prev, cache.code_inputs))
            x = x + cache.positions.index_select(0, pos.view(1))
            future = cache.key_index > pos if n is None else None
        else:
            x = cache.sos.expand(B, -1) if pos == 0 else F.embedding(prev, cache.code_inputs)
            x = x + cache.positions[pos]
            future, n = None, pos + 1
        for block, kv, layer_kv, weights in zip(self.blocks, cache.cross_kv, cache.layers, cache.weights):
            x = block.decode(x, kv, layer_kv, pos, weights, future, n)
        return F.linear(self.norm_out.decode(x, cache.norm_out), cache.head)

    @torch.no_grad()  # fills the cache in place; inference only, like step
    def prefill(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Fill a fresh `cache` with the first P positions in ONE batched pass; logits (B, P, K).

        tokens (B, P) long are the tokens at flat positions 0..P-1 (a known prefix, e.g. the latent
        frames a sliding window keeps). Position p's input is token p-1 (the start vector at 0) and the
        self-attention is causal among the P positions, so the logits and the cache equal those of
        P calls step(tokens[:, p-1], p, cache) (up to float rounding of the batched matmuls). Decoding
        continues with step(tokens[:, -1], P, cache). The conditioning is the cache's (`init_cache`)."""
        cfg = self.config
        B, P = tokens.shape
        if B != cache.batch:
            raise ValueError(f"tokens hold {B} sequences but the cache was made for {cache.batch}")
        if not 1 <= P <= cfg.seq_len:
            raise ValueError(f"prefill of {P} positions: must be 1..{cfg.seq_len} (the sequence length)")
        x = self.fc_in(F.embedding(self.code_rows(tokens[:, :-1].long(), 0), self.codebook))  # (B, P-1, D)
        x = torch.cat([self.sos.to(x.dtype).expand(B, 1, -1), x], dim=1)
        x = x + self.pos_emb().reshape(cfg.seq_len, -1)[:P]
        c = cache.cond
        for block, kv, layer_kv in zip(self.blocks, cache.cross_kv, cache.layers):
            x = block.prefill(x, c, kv, layer_kv)
        return self.head(self.norm_out(x, c))

    # ---- accounting --------------------------------------------------------------------------

    def num_params(self, include_frame_encoder: bool = True) -> int:
        """Trainable parameters (the frozen codebook is a buffer, not counted)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_frame_encoder and self.frame_encoder is not None:
            n -= sum(p.numel() for p in self.frame_encoder.parameters())
            n -= sum(p.numel() for p in self.cond_pos_emb.parameters())
        return n

    def flops_per_token(self) -> float:
        """Forward FLOPs per latent token for a full training-style pass (nanoGPT/PaLM convention):
        2 * (weights of every per-token matmul) + 4 * n_layer * L * n_embd for the attention scores and
        the weighted sum over the full context L (the causal mask's saving is not subtracted).
        Frame conditioning adds the cross-attention (4 * n_layer * S * n_embd per token) plus, shared by
        the L tokens of a sample, the conditioning key/value projections and the ResNet.
        Training costs about 3x this (forward + backward)."""
        cfg = self.config
        D, L = cfg.n_embd, cfg.seq_len
        per_token = self.fc_in.weight.numel() + self.head.weight.numel()
        for block in self.blocks:
            per_token += block.attn.qkv.weight.numel() + block.attn.proj.weight.numel()
            per_token += block.mlp.fc.weight.numel() + block.mlp.proj.weight.numel()
            if block.cross is not None:
                per_token += block.cross.q.weight.numel() + block.cross.proj.weight.numel()
        flops = 2 * per_token + 4 * cfg.n_layer * L * D
        if cfg.uses_frames:
            S = math.prod(cfg.cond_shape)
            flops += 4 * cfg.n_layer * S * D
            per_sample = sum(2 * S * block.cross.kv.weight.numel() for block in self.blocks)
            per_sample += self.frame_encoder.flops(cfg.n_cond_frames, *cfg.frame_shape)
            flops += per_sample / L
        return float(flops)
