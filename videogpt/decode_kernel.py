"""The CPU decode step's attention as one hand-written kernel: one query row per (sequence, head) against the
filled prefix of a key/value cache, for the step compiled on the CPU (`sampling.compiled_decode_step`).

Why not Inductor's own loop: the step spends most of its time streaming the cache (one step reads every filled
key and value once), and Inductor's fused loop over keys (B, H, slots, hd) and values transposed (B, H, hd, slots)
read the values' prefix as hd short rows, one per head dimension, each `slots` floats apart. Rows of n floats with
gaps after them defeat the hardware prefetcher until n nears the whole buffer: measured at the reference config
(batch 4, 4 x 252), its kernel read 7-10 GB/s from memory at half a sequence and 15 GB/s at the end. This kernel
reads a layout whose prefix is one contiguous run per (sequence, head):

    keys   (B, H, blocks, hd, 16): blocks of 16 keys, head dimension outer, so 16 scores are one vector
           accumulated over hd (no horizontal sum per key);
    values (B, H, blocks * 16, hd): one row per position, so the weighted sum adds whole rows.

and, with the keys in blocks, keeps the scores loop's additions in vectors: ~2x Inductor's speed at
mid-sequence from memory, the same at the end (where both stream at the memory's rate).

It is written in ATen's portable vector type (at::vec::Vectorized, AVX2 or AVX-512 as the CPU has: the ISA
Inductor picks for its own kernels) and compiled by Inductor's C++ code cache (on disk: a second process reuses
it), and runs as the custom op `videogpt::decode_attention`, parallel over (sequence, head) with OpenMP on
torch's thread count (eagerly too, for a float32 step). The cache may be float32 or bfloat16 (sample.kv_dtype): a
bfloat16 cache is widened to float32 as it streams in, so it costs half the bytes and the same arithmetic.
`decode_attention_reference` is the same in PyTorch (tests; a bfloat16 step). `key_rows` turns the blocked keys
back into one row per position.
"""
from __future__ import annotations

import ctypes
import functools

import torch

KEY_BLOCK = 16  # keys per block of the blocked key layout
CACHE_DTYPES = (torch.float32, torch.bfloat16)  # the keys' and values' element types the kernel reads

_SOURCE = "#include <torch/csrc/inductor/cpp_prefix.h>\n" + f"constexpr int64_t KEY_BLOCK = {KEY_BLOCK};\n" + r"""
// q (BH, hd), already scaled; keys (BH, blocks, hd, KEY_BLOCK); values (BH, blocks * KEY_BLOCK, hd), both of
// element type T (float or bfloat16, read as float: the arithmetic is float32 either way); out (BH, hd);
// scratch (BH, blocks * KEY_BLOCK). Attends to positions [0, n).
using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();

// W elements (or the first `count`) of T as one float vector
static inline Vec load(const float* p) { return Vec::loadu(p); }
static inline Vec load(const float* p, int64_t count) { return Vec::loadu(p, count); }
static inline Vec load(const at::BFloat16* p) { Vec v; at::vec::load_fp32_from_bf16(p, v); return v; }
static inline Vec load(const at::BFloat16* p, int64_t count) {
    return std::get<0>(at::vec::convert_to_float<at::BFloat16>(at::vec::Vectorized<at::BFloat16>::loadu(p, count)));
}

template <int NV, typename T>
static void weighted_rows(const T* v, const float* e, float* out, int64_t hd, int64_t d0, int64_t n,
                          float inv_sum) {
    Vec acc[NV], acc2[NV];  // two positions at a time: twice the independent chains
    for (int k = 0; k < NV; k++) acc[k] = acc2[k] = Vec(0.f);
    const int64_t last = hd - d0 - (NV - 1) * W;  // lanes of the last vector (1..W)
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        const T* row = v + i * hd + d0;
        const T* row2 = row + hd;
        Vec w(e[i]), w2(e[i + 1]);
        for (int k = 0; k < NV - 1; k++) {
            acc[k] = at::vec::fmadd(w, load(row + k * W), acc[k]);
            acc2[k] = at::vec::fmadd(w2, load(row2 + k * W), acc2[k]);
        }
        acc[NV - 1] = at::vec::fmadd(w, load(row + (NV - 1) * W, last), acc[NV - 1]);
        acc2[NV - 1] = at::vec::fmadd(w2, load(row2 + (NV - 1) * W, last), acc2[NV - 1]);
    }
    if (i < n) {
        const T* row = v + i * hd + d0;
        Vec w(e[i]);
        for (int k = 0; k < NV - 1; k++) acc[k] = at::vec::fmadd(w, load(row + k * W), acc[k]);
        acc[NV - 1] = at::vec::fmadd(w, load(row + (NV - 1) * W, last), acc[NV - 1]);
    }
    for (int k = 0; k < NV; k++) acc[k] = acc[k] + acc2[k];
    Vec inv(inv_sum);
    for (int k = 0; k < NV - 1; k++) (acc[k] * inv).store(out + d0 + k * W);
    (acc[NV - 1] * inv).store(out + d0 + (NV - 1) * W, last);
}

template <typename T>
static void attend(const float* q, const T* keys, const T* values, float* out, float* scratch, int64_t BH,
                   int64_t hd, int64_t blocks, int64_t n, int64_t threads) {
    constexpr int64_t PER_BLOCK = KEY_BLOCK / W;  // vectors per block of keys
    const int64_t slots = blocks * KEY_BLOCK, filled_blocks = (n + KEY_BLOCK - 1) / KEY_BLOCK;
    #pragma omp parallel for num_threads(threads) if (threads > 1)
    for (int64_t bh = 0; bh < BH; bh++) {
        const float* qq = q + bh * hd;
        const T* kb = keys + bh * slots * hd;
        float* s = scratch + bh * slots;
        // scores, a block of keys at a time: four accumulators per vector (d mod 4), independent chains
        for (int64_t b = 0; b < filled_blocks; b++) {
            const T* blk = kb + b * hd * KEY_BLOCK;
            for (int64_t p = 0; p < PER_BLOCK; p++) {
                Vec a0(0.f), a1(0.f), a2(0.f), a3(0.f);
                const T* col = blk + p * W;
                int64_t d = 0;
                for (; d + 3 < hd; d += 4) {
                    a0 = at::vec::fmadd(Vec(qq[d]), load(col + d * KEY_BLOCK), a0);
                    a1 = at::vec::fmadd(Vec(qq[d + 1]), load(col + (d + 1) * KEY_BLOCK), a1);
                    a2 = at::vec::fmadd(Vec(qq[d + 2]), load(col + (d + 2) * KEY_BLOCK), a2);
                    a3 = at::vec::fmadd(Vec(qq[d + 3]), load(col + (d + 3) * KEY_BLOCK), a3);
                }
                for (; d < hd; d++) a0 = at::vec::fmadd(Vec(qq[d]), load(col + d * KEY_BLOCK), a0);
                ((a0 + a1) + (a2 + a3)).store(s + b * KEY_BLOCK + p * W);
            }
        }
        // softmax numerator over [0, n): exp(s - max), and its sum
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < n; i++) mx = std::max(mx, s[i]);
        Vec vmx(mx), vsum(0.f);
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            Vec e = (Vec::loadu(s + i) - vmx).exp();
            e.store(s + i);
            vsum = vsum + e;
        }
        float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, vsum);
        for (; i < n; i++) { s[i] = std::exp(s[i] - mx); sum += s[i]; }
        // out = sum_i e_i v_i / sum, up to 8 vectors of the head dimension per pass over the rows
        const T* vv = values + bh * slots * hd;
        float* oo = out + bh * hd;
        for (int64_t d0 = 0; d0 < hd; d0 += 8 * W) {
            const int64_t nv = std::min<int64_t>(8, (hd - d0 + W - 1) / W);
            switch (nv) {
                case 1: weighted_rows<1>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 2: weighted_rows<2>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 3: weighted_rows<3>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 4: weighted_rows<4>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 5: weighted_rows<5>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 6: weighted_rows<6>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                case 7: weighted_rows<7>(vv, s, oo, hd, d0, n, 1.f / sum); break;
                default: weighted_rows<8>(vv, s, oo, hd, d0, n, 1.f / sum); break;
            }
        }
    }
}

extern "C" void decode_attention_float32(const float* q, const float* keys, const float* values, float* out,
                                         float* scratch, int64_t BH, int64_t hd, int64_t blocks, int64_t n,
                                         int64_t threads) {
    attend(q, keys, values, out, scratch, BH, hd, blocks, n, threads);
}

extern "C" void decode_attention_bfloat16(const float* q, const at::BFloat16* keys, const at::BFloat16* values,
                                          float* out, float* scratch, int64_t BH, int64_t hd, int64_t blocks,
                                          int64_t n, int64_t threads) {
    attend(q, keys, values, out, scratch, BH, hd, blocks, n, threads);
}
"""


@functools.cache
def _kernels() -> dict:
    """The kernel's entry point per cache dtype (CACHE_DTYPES; `decode_attention_float32`, ..._bfloat16 in the
    source), compiled once per source and machine by Inductor's C++ code cache (which also picks the ISA)."""
    from torch._inductor.codecache import CppCodeCache
    lib = CppCodeCache.load(_SOURCE)
    p, i = ctypes.c_void_p, ctypes.c_int64
    kernels = {}
    for dtype in CACHE_DTYPES:
        fn = kernels[dtype] = getattr(lib, "decode_attention_" + str(dtype).removeprefix("torch."))
        fn.argtypes = [p, p, p, p, p, i, i, i, i, i]
        fn.restype = None
    return kernels


# Registered with the low-level torch.library.Library API (a schema plus a CPU kernel) rather than
# torch.library.custom_op: the compiled step calls the op once per layer a step, and custom_op's Python layer
# costs ~19 us a call against ~8 here (measured at batch 4, the reference config; the kernel itself ~3 us at short
# prefixes). It has a CPU kernel only (other devices use the reference) and takes no gradients (decoding runs
# under inference_mode).
_LIBRARY = torch.library.Library("videogpt", "DEF")
_LIBRARY.define("decode_attention(Tensor q, Tensor keys, Tensor values, SymInt n) -> Tensor")


def _decode_attention_cpu(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    B, H, hd = q.shape
    blocks = keys.shape[2]
    if not (0 < n <= blocks * KEY_BLOCK):
        raise ValueError(f"decode_attention: n = {n} outside the cache's 1..{blocks * KEY_BLOCK} positions")
    if not kernel_applies(q, keys) or values.dtype != keys.dtype:
        raise ValueError(f"decode_attention: q {q.dtype} on {q.device.type}, keys {keys.dtype}, values {values.dtype}; "
                         f"it takes a float32 q on the CPU and keys and values of one of {CACHE_DTYPES}")
    q, keys, values = q.contiguous(), keys.contiguous(), values.contiguous()  # no copies for the cache's buffers
    out = torch.empty_like(q)
    scratch = torch.empty(B * H, blocks * KEY_BLOCK)
    _kernels()[keys.dtype](q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), scratch.data_ptr(),
                           B * H, hd, blocks, n, torch.get_num_threads())
    return out


_LIBRARY.impl("decode_attention", _decode_attention_cpu, "CPU")


@torch.library.register_fake("videogpt::decode_attention", lib=_LIBRARY)
def _(q, keys, values, n):
    return torch.empty_like(q)


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """softmax(q k^T) v over positions [0, n), per (sequence, head): q (B, H, hd) float32, already scaled; keys
    (B, H, blocks, hd, KEY_BLOCK) and values (B, H, blocks * KEY_BLOCK, hd), CPU tensors of one of CACHE_DTYPES
    (a bfloat16 cache is read as float32: the arithmetic is float32 either way). Returns (B, H, hd) float32.
    CPU operands it does not take raise ValueError naming them (`kernel_applies` tells beforehand). Compiled,
    the graph calls the op itself."""
    return torch.ops.videogpt.decode_attention.default(q, keys, values, n)


def key_rows(keys: torch.Tensor) -> torch.Tensor:
    """Blocked keys (B, H, blocks, hd, KEY_BLOCK) as one row per position, (B, H, blocks * KEY_BLOCK, hd) (a copy)."""
    return keys.transpose(-1, -2).flatten(2, 3)


def decode_attention_reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, n) -> torch.Tensor:
    """decode_attention in PyTorch operations (any dtype; q's dtype out): the same layouts and result."""
    k = key_rows(keys)[:, :, :n].to(q.dtype)  # (B, H, n, hd)
    weights = (q.unsqueeze(2) * k).sum(-1).softmax(-1)  # (B, H, n)
    return (weights.unsqueeze(-1) * values[:, :, :n].to(q.dtype)).sum(-2)


def kernel_applies(q: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether `decode_attention` takes these operands (a float32 q on the CPU, keys of one of CACHE_DTYPES; the
    values are the same cache's); otherwise the reference."""
    return q.device.type == "cpu" and q.dtype == torch.float32 and keys.dtype in CACHE_DTYPES
