"""Sampling from the prior: token grids, then videos through the VQ-VAE decoder.

Tokens are drawn one position at a time in raster order (t slowest, w fastest). `sample_tokens`
uses the prior's key/value cache (each step costs O(prefix)); `sample_tokens_recompute` is the plain
reference loop that runs the full forward pass at every position. Both consume randomness the same
way, so with the same seed they produce identical tokens (tested). `sample_tokens_sliding` makes
videos longer than the training clips by a sliding window over latent time (its section below).

Randomness: a CPU `torch.Generator` seeded by `seed` draws, before any decoding, one uniform number
per (sample, position). A token is then picked by inverse-CDF lookup of that number in the (filtered)
categorical distribution, which is an exact draw from it, like `torch.multinomial`. Why not
`torch.multinomial` itself: it needs a generator on the tensor's device, so a CPU generator would
force a device->host copy of the probabilities at every step. Drawing the uniforms up front keeps the
loop free of host syncs, makes the stream device-agnostic, and makes sample i depend only on (seed, i)
and the model, not on batch_size.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from typing import Optional

import numpy as np
import torch
from videogpt.progress import progress_bar

from videogpt.prior import Prior
from videogpt.video import to_float, to_uint8


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """(B, K) logits with the excluded codes set to -inf. top_k keeps the k largest logits (exactly k,
    ties broken by index); top_p keeps the smallest set of most likely codes whose probability mass is
    >= top_p (always at least the most likely code), measured after the top-k cut."""
    logits = logits.float()
    K = logits.shape[-1]
    if top_k is not None and top_k < K:
        values, index = logits.topk(top_k, dim=-1)
        logits = torch.full_like(logits, -math.inf).scatter_(-1, index, values)
    if top_p is not None and top_p < 1.0:
        probs, order = logits.softmax(-1).sort(dim=-1, descending=True, stable=True)
        mass_before = probs.cumsum(-1) - probs  # mass of the codes more likely than this one
        drop = mass_before >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def choose(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None) -> torch.Tensor:
    """Pick one code per row of (B, K) logits; u (B,) uniforms in [0, 1) supply the randomness.
    temperature 0 = argmax (greedy; u unused)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    # Inverse CDF: the first code whose cumulative mass exceeds u * total, i.e. the number of codes whose
    # cumulative mass is <= it (the cdf never decreases). Codes with zero mass are never chosen (their cdf
    # equals their predecessor's); the clamp to the last code with mass guards u * total rounding up to
    # total. Counts and maxima rather than searchsorted and a second cumsum: the same integers, and reductions
    # the compiled step fuses into one kernel (each of those two ran as a separate call, ~10 us a step).
    cdf = probs.cumsum(-1)
    target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = (cdf <= target).sum(-1)
    codes = torch.arange(probs.shape[-1], device=probs.device)
    last_nonzero = torch.where(probs > 0, codes, 0).amax(-1)
    return torch.minimum(index, last_nonzero)


def _check(prior: Prior, n: int, temperature, top_k, top_p, cond: dict, batch_size, n_frames=None):
    """Check the arguments before any work; cond holds label, frames and actions (n_frames: the video
    length the actions must cover; None = the training clip length)."""
    cfg = prior.config
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"sample.temperature: {temperature} must be a finite number >= 0")
    if top_k is not None and not 1 <= top_k:
        raise ValueError(f"sample.top_k: {top_k} must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"sample.top_p: {top_p} must be in (0, 1]")
    if cfg.condition == "class" and (cond["label"] is None or len(cond["label"]) != n):
        raise ValueError(f"class-conditional prior: pass label with {n} class ids")
    if cfg.uses_frames and (cond["frames"] is None or cond["frames"].shape[0] != n):
        raise ValueError(f"frame-conditional prior: pass frames (n={n}, 3, {cfg.n_cond_frames}, H, W)")
    if cfg.uses_actions:
        actions, (T, A) = cond["actions"], cfg.action_shape
        expected = (n, n_frames or T, A)
        if actions is None or tuple(actions.shape) != expected:
            got = "none" if actions is None else tuple(actions.shape)
            raise ValueError(f"action-conditional prior: pass actions of shape {expected} (videos, frames, values "
                             f"per action), one action per generated frame; got {got}")
        if not torch.isfinite(torch.as_tensor(actions)).all():
            raise ValueError("actions hold NaN or inf values (clips without actions?)")


def draw_uniforms(n: int, seq_len: int, seed: int) -> torch.Tensor:
    """The sampler's randomness: (n, seq_len) uniforms in [0, 1) from a CPU generator seeded by `seed`;
    entry (i, p) picks the token of sample i at flat position p."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(n, seq_len, generator=gen)


def _batches(prior, n, cond: dict, batch_size, u):
    """Yield (start, size, cond, uniforms) per batch, already on the prior's device; cond holds the
    batch's label / frames / actions, None for those the prior does not use."""
    cfg, device = prior.config, prior.codebook.device
    used = {"label": cfg.condition == "class", "frames": cfg.uses_frames, "actions": cfg.uses_actions}
    cond = {k: torch.as_tensor(v) if v is not None and used[k] else None for k, v in cond.items()}
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        part = {k: v[start:stop].to(device) if v is not None else None for k, v in cond.items()}
        yield start, stop - start, part, u[start:stop].to(device)


def _run(prior, n, decode_batch, *, temperature, top_k, top_p, label, frames, actions, seed, batch_size,
         progress, compile=False, dtype="auto", kv_dtype="auto", first=0):
    cond = {"label": label, "frames": frames, "actions": actions}
    _check(prior, n, temperature, top_k, top_p, cond, batch_size)
    cfg = prior.config
    was_training = prior.training
    prior.eval()
    try:
        with torch.inference_mode():
            out = torch.empty(n, cfg.seq_len, dtype=torch.long, device=prior.codebook.device)
            n_batches = -(-n // batch_size)
            bar = progress_bar(total=n_batches * cfg.seq_len, desc="sampling", unit="pos", disable=not progress)
            uniforms = draw_uniforms(first + n, cfg.seq_len, seed)[first:]
            pick = _Picker(prior, temperature, top_k, top_p,
                           use_compile(compile, prior, min(n, batch_size), n_batches * cfg.seq_len),
                           decode_dtypes(dtype, kv_dtype, prior.codebook.device))
            for start, size, part, u in _batches(prior, n, cond, batch_size, uniforms):
                out[start:start + size] = decode_batch(prior, size, part, pick, bar, u)
            bar.close()
        return out.view(n, *cfg.latent_shape).cpu()
    finally:
        prior.train(was_training)


_COMPILED: dict = {}  # (device type, CPU threads) -> the compiled decode_step (its graphs are cached on it)
# Inductor's settings for the CPU's compiled step, applied around each decode loop (_Picker.loop) or lone step (a
# recompilation happens inside a call). Freezing makes the weight Parameters constants (DecodeWeights,
# in_out=False), which max-autotune's CPP GEMM template packs once and multiplies with a generated few-row kernel;
# ATEN stays a choice for any matrix the template does not take.
CPU_COMPILE_CONFIG = dict(freezing=True, max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")
_FROZEN: dict = {"prior": None, "versions": None}  # the prior whose weights the CPU's compiled graphs hold (a weakref)


COMPILE_SETTINGS = ("auto", True, False)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# sample.dtype "auto" per device type (others: float32). On CUDA the default model's bits/dim under bf16 decoding
# is within 0.01 of float32 (README, Performance); on the CPU float32 keeps the default run's samples byte for byte.
DECODE_DTYPE_AUTO = {"cuda": "bfloat16"}


def decode_dtypes(dtype, kv_dtype, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """sample.dtype and sample.kv_dtype resolved for a run on `device`: (the decode step's dtype, the key/value
    cache's). dtype auto = DECODE_DTYPE_AUTO for the device type, else float32; kv_dtype auto = the step's."""
    for key, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value != "auto" and value not in DTYPES:
            raise ValueError(f"sample.{key}: {value!r} must be auto, {' or '.join(DTYPES)}")
    step = DTYPES[DECODE_DTYPE_AUTO.get(torch.device(device).type, "float32") if dtype == "auto" else dtype]
    return step, step if kv_dtype == "auto" else DTYPES[kv_dtype]


# sample.compile auto on the CPU: compile when the run's decode steps read at least this many GB in total
# (`decode_bytes_per_step`), an estimate of when the compiled step repays its compile time. Measured here at the
# reference config, batch 4 (29.3 MB a step): eager 3.3 ms a step, compiled 2.0, i.e. 0.044 s saved per GB read,
# against 13-15 s of compiling (not cached between processes: Inductor's graph cache skips graphs holding the
# mkldnn-prepacked weights of its GEMMs; with prepacking off a graph is cached, but its GEMMs are slower and a
# second process still spent 14 s in tracing before its first sample); so
# break-even near 340 GB, about 11 batches of 1,024 positions there. The default run reads ~1 GB: eager.
AUTO_COMPILE_MIN_GB = 340


def decode_weight_bytes(prior: Prior) -> int:
    """Bytes of the weights one decode step reads, in float32: the blocks' and the output head's."""
    return 4 * sum(p.numel() for name, p in prior.named_parameters() if name.startswith(("blocks.", "head.")))


def decode_bytes_per_step(prior: Prior, batch: int, kv_dtype: torch.dtype = torch.float32) -> int:
    """Bytes one decode step must read, whatever its kernels: every decode weight once (`decode_weight_bytes`, in
    float32), and the keys and values of the filled prefix (on average half the sequence), in kv_dtype."""
    cfg = prior.config
    kv_mean = cfg.n_layer * batch * 2 * (cfg.seq_len / 2) * cfg.n_embd
    return int(decode_weight_bytes(prior) + kv_dtype.itemsize * kv_mean)


def use_compile(setting, prior: Prior, batch: int, steps: int) -> bool:
    """sample.compile resolved for a run of `steps` decode steps of `batch` sequences: True / False as given;
    "auto" = compile on CUDA, and on the CPU when the steps read at least AUTO_COMPILE_MIN_GB (so the default
    run decodes eagerly and keeps its samples byte for byte) and Inductor finds a C++ compiler."""
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"sample.compile: {setting!r} must be auto, true or false")
    if setting == "auto":
        if prior.codebook.device.type == "cuda":
            return True
        return steps * decode_bytes_per_step(prior, batch) >= AUTO_COMPILE_MIN_GB * 1e9 and _has_cpp_compiler()
    return bool(setting)


def _has_cpp_compiler() -> bool:
    """Whether Inductor can build CPU kernels here (it looks for g++ / clang++, or $CXX via its config)."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    try:
        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - whichever way the search fails, the answer is "no compiler"
        return False
    return True


def compiled_decode_step(device: torch.device):
    """`decode_step` compiled for `device`; fullgraph: a graph break would put Python back between the kernels.
    - CUDA: static shapes (the position a 0-d tensor, the whole cache read under a mask) and CUDA graphs
      (mode="reduce-overhead": a step is ~100 small kernels whose launches, not bandwidth, bound it).
    - CPU: Inductor with CPU_COMPILE_CONFIG (call it inside `torch._inductor.config.patch(CPU_COMPILE_CONFIG)`),
      dynamic=True: the filled length n is a symbol, so the attention reads exactly the prefix in one graph for
      every position >= 1 (reading the whole cache under a mask, as on CUDA, took 1.6x longer here); n = 1 would
      be specialised, so position 0 runs the same function eagerly (`_Picker`).
    Inductor fixes a CPU kernel's thread count when it generates it, and the graphs' guards do not check it: hence
    one compiled function per thread count (each torch.compile keeps graphs of its own)."""
    kind = torch.device(device).type
    key = (kind, torch.get_num_threads() if kind == "cpu" else None)
    if key not in _COMPILED:
        if kind == "cuda":
            _COMPILED[key] = torch.compile(decode_step, dynamic=False, fullgraph=True, mode="reduce-overhead")
        else:
            _COMPILED[key] = torch.compile(decode_step, dynamic=True, fullgraph=True, backend=_CapturedGraph)
    return _COMPILED[key]


class _CapturedGraph:
    """The compile backend of the CPU's decode step: Inductor (`compile_fx`, what backend="inductor" runs), keeping
    the compiled graph together with how to gather its inputs, so that a decode loop's later steps can call it
    without Dynamo (`_Picker.step`).

    Why: once a loop's first compiled step has run with Dynamo's guards checked, every later step calls the same
    function with the same objects, shapes, dtypes and devices (only tensor values and n change; the reason the
    loop already skips the guards), so all Dynamo still does per step is enter the frame, look up its cache and
    gather the graph's inputs from the arguments: ~0.2 ms a step at batch 4, the reference config (12% of a
    1.7 ms step; measured alternating in one process, same tokens). Here the inputs are gathered by the expressions
    Dynamo itself records for each graph input (its sources, e.g. `L['cache'].layers[0][0]`), compiled once into
    one function of the step's arguments (`inputs`); a Python float is passed as a float64 0-d tensor, as Dynamo
    does. `inputs` is None, and the loop stays on Dynamo's path, if the graph does not return exactly the step's
    two tensors or an input has no such expression. What still checks each direct call: the compiled graph's own
    assertions on its inputs' sizes and strides."""

    last_run: Optional[weakref.ref] = None  # to the graph the latest call ran (the one a guarded step chose)

    def __init__(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx
        self.fn = compile_fx(gm, example_inputs)
        self.inputs = None
        output = next(node for node in gm.graph.nodes if node.op == "output")
        graph_args = [node.meta.get("grapharg") for node in gm.graph.nodes if node.op == "placeholder"]
        sources = [getattr(getattr(arg, "source", None), "name", None) for arg in graph_args]
        as_tensor = [getattr(arg, "pass_arg_as_tensor", None) for arg in graph_args]
        returns_two = isinstance(output.args[0], (tuple, list)) and len(output.args[0]) == 2
        recorded = all(isinstance(name, str) for name in sources) and all(isinstance(t, bool) for t in as_tensor)
        if returns_two and recorded:
            exprs = [f"torch._as_tensor_fullprec({name})" if tensor else name
                     for name, tensor in zip(sources, as_tensor)]
            self.inputs = eval("lambda L, G: [" + ", ".join(exprs) + "]", {"torch": torch})

    def __call__(self, *args):
        _CapturedGraph.last_run = weakref.ref(self)  # weak: torch._dynamo.reset frees the graph and its weights
        return self.fn(*args)

    def direct(self, *args) -> tuple[torch.Tensor, torch.Tensor]:
        """decode_step(*args) through this graph, Dynamo skipped: args as decode_step takes them, n included."""
        return tuple(self.fn(*self.inputs(dict(zip(_DECODE_STEP_ARGS, args)), globals())))


def _drop_stale_frozen_weights(prior: Prior) -> None:
    """Freezing copies the weights into the CPU's compiled graph as constants, and the graph's guards check which
    Parameters it was given, not their values: after an in-place change (an optimizer step, load_state_dict) it
    would multiply by the old values. And every other prior would add a graph holding a copy of its weights, until
    torch.compile's recompile limit stops the sampler. So the compiled graphs hold one prior's weights at a time:
    a compiled sampling run with another prior, or with this one's Parameter version counters moved since its
    previous run, first drops every compiled graph (torch._dynamo.reset: the process's other compiled code too)."""
    versions = tuple(p._version for p in prior.parameters())
    held = _FROZEN["prior"]  # a weakref; a prior since collected still has its graphs (and weights) in the cache
    if held is not None and (held() is not prior or _FROZEN["versions"] != versions):
        torch._dynamo.reset()
    _FROZEN.update(prior=weakref.ref(prior), versions=versions)


class _Picker:
    """The sampling step with its settings bound: pick(cache, prev, pos, u) -> tokens (B,), pos an int, and the
    cache it reads (`init_cache`). Compiled, the step gets the position as a 0-d tensor (`Prior.step`'s forms):
    on CUDA with the whole cache under the mask, on the CPU with the filled length n as a symbolic int."""

    def __init__(self, prior, temperature, top_k, top_p, compiled: bool,
                 dtypes: tuple[torch.dtype, torch.dtype] = (torch.float32, torch.float32)):
        self.prior, self.rule = prior, (temperature, top_k, top_p)
        self.dtype, self.kv_dtype = dtypes  # of the step and of the cache (decode_dtypes)
        device = prior.codebook.device
        self.compiled_cpu = compiled and device.type != "cuda"
        self.pos = torch.zeros((), dtype=torch.long, device=device) if compiled else None
        self._loop: Optional[contextlib.ExitStack] = None  # inside `loop`: what it undoes at its end
        self._guarded = False  # inside `loop`: whether a compiled step has run with its guards checked
        self._direct: Optional[_CapturedGraph] = None  # inside `loop`: the graph that step ran, called directly
        if self.compiled_cpu:
            _drop_stale_frozen_weights(prior)

    @contextlib.contextmanager
    def loop(self):
        """Around one decode loop (consecutive positions of one cache). For the CPU's compiled step: Inductor's
        settings once for the loop instead of around every step (config.patch costs ~30 us), and, once a
        compiled step of the loop has run with Dynamo's guards checked (compiling there if it must), the
        later steps call the graph that step ran directly, without Dynamo (`_CapturedGraph`: ~0.2 ms a step),
        or, where that graph cannot be called so, skip the guards (~50 us a step; torch.compiler.set_stance's
        skip_guard_eval_unsafe). That is sound here because every later step calls the same function with the
        same objects, shapes, dtypes and devices as the guarded one: only the tensors' values and n (a symbol,
        growing from there) change. Both are undone when the loop ends."""
        if not self.compiled_cpu:
            yield
            return
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch._inductor.config.patch(CPU_COMPILE_CONFIG))
            self._loop, self._guarded, self._direct = stack, False, None
            try:
                yield
            finally:
                self._loop, self._direct = None, None

    def init_cache(self, batch: int, **cond):
        """An empty cache for `batch` sequences laid out for this step; cond: Prior.init_cache's label, cond_kv,
        actions."""
        return self.prior.init_cache(batch, dtype=self.dtype, kv_dtype=self.kv_dtype,
                                     for_compiled_cpu=self.compiled_cpu, **cond)

    def __call__(self, cache, prev, pos: int, u):
        return self.step(cache, prev, pos, u)[0]

    def step(self, cache, prev, pos: int, u) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B,), logits (B, K)) of position `pos`, whichever form of the step this picker runs."""
        if self.pos is None:
            return decode_step(self.prior, cache, prev, pos, u, *self.rule)
        index = self.pos.fill_(pos)  # one tensor, refilled: the compiled graph's input never changes identity
        step = compiled_decode_step(index.device)  # looked up here: the thread count is the decode loop's
        if not self.compiled_cpu:
            return step(self.prior, cache, prev, index, u, *self.rule)
        if pos == 0:  # the start vector's step, eagerly (compiled, n = 1 would be a graph of its own)
            return decode_step(self.prior, cache, prev, index, u, *self.rule, n=1)
        if self._direct is not None:  # a later step of the loop: the guarded step's graph, without Dynamo (`loop`)
            return self._direct.direct(self.prior, cache, prev, index, u, *self.rule, pos + 1)
        if self._loop is None:  # a step on its own
            with torch._inductor.config.patch(CPU_COMPILE_CONFIG):
                return step(self.prior, cache, prev, index, u, *self.rule, n=pos + 1)
        _CapturedGraph.last_run = None
        out = step(self.prior, cache, prev, index, u, *self.rule, n=pos + 1)
        if not self._guarded:  # the loop's first compiled step ran guarded: the rest skip Dynamo or its guards
            self._guarded = True
            ran = _CapturedGraph.last_run() if _CapturedGraph.last_run is not None else None
            if ran is not None and ran.inputs is not None:
                self._direct = ran
            else:
                self._loop.enter_context(torch.compiler.set_stance("default", skip_guard_eval_unsafe=True))
        return out


# Up to this many sequences per batch, the CPU decode loop runs on one thread. A step's matmuls are then a few
# rows each, too small to split. Measured on 2 cores (prior 4 x 252, 4x16x16 latent), a second thread gave
# batch 1: 0.93x the speed; batch 4: 1.04-1.26x on an idle machine with OpenMP's default spin-waiting, 0.54x
# with OMP_WAIT_POLICY=PASSIVE (which every stage sets), 0.09x with another process busy on a core;
# batch 16: 1.44x (idle).
ONE_THREAD_MAX_BATCH = 4


@contextlib.contextmanager
def _decode_threads(batch: int, device: torch.device):
    """torch.set_num_threads(1) for small CPU batches (ONE_THREAD_MAX_BATCH), restored afterwards. The same holds for
    the compiled step (reference config, batch 4: 1.9 ms/position on one thread; on two, 1.4 with OpenMP's default
    spin-waiting and 3.5-3.8 with OMP_WAIT_POLICY=PASSIVE, which every stage sets: a step is ~30 parallel regions)."""
    saved = torch.get_num_threads()
    if device.type == "cpu" and batch <= ONE_THREAD_MAX_BATCH:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def decode_step(prior: Prior, cache, prev: torch.Tensor, pos, u: torch.Tensor, temperature: float,
                top_k: Optional[int], top_p: Optional[float], n: Optional[int] = None):
    """One sampling step as one function: the prior's decode step at position `pos` and the pick from its
    logits with the uniforms u (B,) -> (tokens (B,) long, logits (B, K)). pos an int: eager, exactly the
    filled prefix; a 0-d long tensor: with n = pos + 1 the same prefix, n None the whole cache under a mask
    (`Prior.step`'s forms). Nothing in it branches on data (temperature / top_k / top_p are settings), so with
    a tensor pos every position runs the same graph, which is what `compile` traces."""
    logits = prior.step(prev, pos, cache, n)
    return choose(logits, u, temperature, top_k, top_p), logits


_DECODE_STEP_ARGS = tuple(inspect.signature(decode_step).parameters)  # _CapturedGraph.direct's argument names


def _decode_positions(prior, cache, tokens, prev, positions, u_of, pick, bar):
    """Decode `positions` (consecutive) into tokens[:, pos], starting from the token `prev` (B,) at the
    position before the first; u_of(pos) (B,) are the uniforms of a position."""
    with _decode_threads(len(tokens), tokens.device), pick.loop():
        for pos in positions:
            prev = pick(cache, prev, pos, u_of(pos))
            tokens[:, pos] = prev
            bar.update(1)
    return prev


def _decode_cached(prior: Prior, size, cond, pick, bar, u):
    device = prior.codebook.device
    cache = pick.init_cache(size, label=cond["label"], cond_kv=prior.cross_kv(cond["frames"]), actions=cond["actions"])
    tokens = torch.empty(size, prior.config.seq_len, dtype=torch.long, device=device)
    prev = torch.zeros(size, dtype=torch.long, device=device)
    _decode_positions(prior, cache, tokens, prev, range(prior.config.seq_len), lambda pos: u[:, pos], pick, bar)
    return tokens


def _decode_recompute(prior: Prior, size, cond, pick, bar, u):
    L, K = prior.config.seq_len, prior.config.n_codes
    tokens = torch.zeros(size, L, dtype=torch.long, device=prior.codebook.device)
    grid = tokens.view(size, *prior.config.latent_shape)
    for pos in range(L):
        # Positions >= pos still hold zeros; causality makes them irrelevant to the logits at pos.
        logits = prior(grid, **cond).view(size, L, K)[:, pos]
        tokens[:, pos] = choose(logits, u[:, pos], *pick.rule)
        bar.update(1)
    return tokens


def sample_tokens(prior: Prior, n: int, *, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, label=None, frames: Optional[torch.Tensor] = None,
                  actions: Optional[torch.Tensor] = None, seed: int = 0, batch_size: int = 16,
                  progress: bool = False, compile="auto", dtype="auto", kv_dtype="auto", first: int = 0
                  ) -> torch.Tensor:
    """Draw n token grids, (n, *latent_shape) long on the CPU, with the key/value cache.

    temperature 0 = greedy (argmax); top_k / top_p restrict sampling to the k most likely codes / the
    nucleus of mass top_p (None = off, the paper's setting). label: (n,) class ids for a class-
    conditional prior; frames: (n, 3, n_cond_frames, H, W) in [-0.5, 0.5] for a frame-conditional one;
    actions: (n, frames per clip, action values), raw (the prior normalises them), for an
    action-conditional one.
    compile: True / False / "auto" (sample.compile, see `use_compile`): run the decode step compiled.
    dtype / kv_dtype: "auto", "float32" or "bfloat16" (sample.dtype / sample.kv_dtype, see `decode_dtypes`): of the
    decode step and of its key/value cache.
    Same seed and arguments give bitwise-identical samples on the same device (and compile setting).
    first: these are samples first..first + n - 1 of a larger set (their randomness is theirs in the set; the
    conditioning given is theirs), so a set drawn in parts whose sizes are multiples of batch_size has the
    bytes of the set drawn at once (the same batches).
    The prior is run in eval mode (dropout off) and restored to its previous mode afterwards."""
    return _run(prior, n, _decode_cached, temperature=temperature, top_k=top_k, top_p=top_p, label=label,
                frames=frames, actions=actions, seed=seed, batch_size=batch_size, progress=progress,
                compile=compile, dtype=dtype, kv_dtype=kv_dtype, first=first)


def sample_tokens_recompute(prior: Prior, n: int, *, temperature: float = 1.0, top_k: Optional[int] = None,
                            top_p: Optional[float] = None, label=None, frames: Optional[torch.Tensor] = None,
                            actions: Optional[torch.Tensor] = None, seed: int = 0, batch_size: int = 16,
                            progress: bool = False) -> torch.Tensor:
    """Reference sampler: the full forward pass at every position (no cache). Same arguments and the
    same randomness as `sample_tokens`, so it yields the same tokens; L times slower in FLOPs."""
    return _run(prior, n, _decode_recompute, temperature=temperature, top_k=top_k, top_p=top_p, label=label,
                frames=frames, actions=actions, seed=seed, batch_size=batch_size, progress=progress)


@torch.inference_mode()
def decode_bits_per_dim(prior: Prior, tokens: torch.Tensor, *, dtype="auto", kv_dtype="auto", label=None,
                        frames: Optional[torch.Tensor] = None, actions: Optional[torch.Tensor] = None,
                        batch_size: int = 16) -> float:
    """Bits per dimension of token grids (n, t, h, w) under the sampler's decode step (teacher forcing: position
    p is fed the true token p-1) in the given sample.dtype / sample.kv_dtype: what a decode precision costs the
    distributions the sampler draws from. In float32 it equals the full forward pass's bits/dim up to rounding.
    Cross-entropy in float32, mean over all positions."""
    cfg = prior.config
    tokens = torch.as_tensor(tokens).reshape(len(tokens), cfg.seq_len)
    step_dtype, cache_dtype = decode_dtypes(dtype, kv_dtype, prior.codebook.device)
    was_training = prior.training
    prior.eval()
    nats = 0.0
    try:
        u = torch.zeros(len(tokens), cfg.seq_len)  # unused: only the cond batching of _batches is wanted
        cond = {"label": label, "frames": frames, "actions": actions}
        for start, size, part, _ in _batches(prior, len(tokens), cond, batch_size, u):
            batch = tokens[start:start + size].to(prior.codebook.device)
            cache = prior.init_cache(size, dtype=step_dtype, kv_dtype=cache_dtype, label=part["label"],
                                     cond_kv=prior.cross_kv(part["frames"]), actions=part["actions"])
            for pos in range(cfg.seq_len):
                logits = prior.step(batch[:, pos - 1] if pos else None, pos, cache).float()
                nats += torch.nn.functional.cross_entropy(logits, batch[:, pos], reduction="sum").item()
    finally:
        prior.train(was_training)
    return nats / (tokens.numel() * math.log(2))


@torch.inference_mode()
def videos_to_tokens(vqvae, videos, batch_size: int = 16) -> torch.Tensor:
    """uint8 videos (N, T, H, W, 3) of the VQ-VAE's clip size -> codes (N, t, h, w) long, on the CPU; the
    inverse of `tokens_to_videos`. The VQ-VAE runs in eval mode (BatchNorm on its running statistics, the
    codebook never moves) and its mode is restored afterwards."""
    videos = torch.as_tensor(np.asarray(videos))
    if videos.dtype != torch.uint8 or videos.dim() != 5 or videos.shape[-1] != 3:
        raise ValueError(f"encode expects uint8 videos (N, T, H, W, 3), got {videos.dtype} {tuple(videos.shape)}")
    device = next(vqvae.parameters()).device
    was_training = vqvae.training
    vqvae.eval()
    try:
        return torch.cat([vqvae.encode(to_float(chunk).to(device)).cpu() for chunk in videos.split(batch_size)])
    finally:
        vqvae.train(was_training)


def tokens_to_videos(vqvae, tokens: torch.Tensor, batch_size: int = 16, *, window: Optional[int] = None
                     ) -> np.ndarray:
    """Decode (n, t, h, w) tokens with the VQ-VAE (in eval mode) into uint8 videos (n, T, H, W, 3):
    clamp to [-0.5, 0.5], shift to [0, 1], scale to [0, 255] and round.

    With `window` (latent frames the VQ-VAE was trained on) and tokens longer than that, the decode runs
    over overlapping windows, blended (see `_blend_windows`): the VQ-VAE's attention position table admits
    no other length, and its convolutions were only ever trained on that much context."""
    windowed = window is not None and tokens.shape[1] > window
    with _decoding(vqvae) as decode:
        videos = [to_uint8(_blend_windows(decode, chunk, window) if windowed else decode(chunk)).cpu()
                  for chunk in tokens.split(batch_size)]
    return torch.cat(videos).numpy()


@contextlib.contextmanager
def _decoding(vqvae):
    """A decode function (B, t, h, w) codes -> float (B, 3, T, H, W) on the VQ-VAE's device, run in eval
    mode without autograd; the VQ-VAE's mode is restored afterwards."""
    device = next(vqvae.parameters()).device
    was_training = vqvae.training
    vqvae.eval()  # never let the codebook's EMA move while decoding (reference issue #7)
    try:
        with torch.inference_mode():
            yield lambda codes: vqvae.decode(codes.to(device)).float()
    finally:
        vqvae.train(was_training)


def _blend_windows(decode, tokens: torch.Tensor, window: int) -> torch.Tensor:
    """Windows of `window` latent frames half a window apart (`window_starts` with stride window // 2,
    whatever stride the sampler used) are each decoded whole, and every output frame is the weighted
    mean of its decodes in all the windows that hold it. A frame's weight in a window grows with its
    distance from the window's nearer edge (0.5, 1.5, 2.5, ... frames), so a frame's pixels come mostly
    from decodes that saw temporal context on both sides of it, not from a window edge where the
    decoder's convolutions and attention see nothing beyond, and the weights shift gradually from one
    window to the next: there is no hand-over frame where one decode would replace another. (Taking
    each frame from the single window where it is most central instead left a visible step at every
    hand-over: the VQ-VAE's temporal attention renders the same codes slightly differently at
    different positions in a window.) Cost: about twice a decode of the whole length. Returns float
    (B, 3, T_latent * f, H, W)."""
    starts = window_starts(tokens.shape[1], window, default_window_stride(window))
    total = weight = None
    for a in starts:
        x = decode(tokens[:, a:a + window])  # (B, 3, window * f, H, W)
        span = x.shape[2]
        f = span // window
        if total is None:
            total = torch.zeros(*x.shape[:2], tokens.shape[1] * f, *x.shape[3:], device=x.device)
            weight = torch.zeros(tokens.shape[1] * f, device=x.device)
        pos = torch.arange(span, dtype=torch.float32, device=x.device)
        w = torch.minimum(pos + 0.5, span - pos - 0.5)
        total[:, :, a * f:a * f + span] += x * w.view(1, 1, -1, 1, 1)
        weight[a * f:a * f + span] += w
    return total / weight.view(1, 1, -1, 1, 1)


def sample(prior: Prior, vqvae, n: int, *, n_frames: Optional[int] = None, window_stride: Optional[int] = None,
           **kw) -> np.ndarray:
    """Sample n videos: `sample_tokens(prior, n, **kw)`, then decode in batches of kw['batch_size']
    (default 16). Returns uint8 (n, T, H, W, 3), channels-last (docs/CONTRACTS.md).

    n_frames: video length; None or the training clip length = one pass over the trained latent grid.
    Longer videos come from `sample_tokens_sliding` (window_stride: new latent frames per window) and
    are decoded in blended overlapping windows (`tokens_to_videos` with window); their first
    training-length frames' tokens equal the one-pass sample of the same seed."""
    window = prior.config.latent_shape[0]
    n_latent = window if n_frames is None else latent_frames(n_frames, window, vqvae.config.downsample[0])
    batch_size = kw.get("batch_size", 16)
    if n_latent == window:
        return tokens_to_videos(vqvae, sample_tokens(prior, n, **kw), batch_size=batch_size)
    tokens = sample_tokens_sliding(prior, n, n_latent, window_stride=window_stride, vqvae=vqvae, **kw)
    return tokens_to_videos(vqvae, tokens, batch_size, window=window)


# --------------------------------------------------------------------------------------------
# Videos longer than the training clips: a sliding window over latent time
#
# The prior's position tables and the VQ-VAE's attention know only the training latent length t. So a
# long video is made of windows of exactly t latent frames, each placed at the trained positions 0..t-1:
# a window keeps the last t - s latent frames of what exists so far as its prefix (filled into the
# key/value cache in one batched pass, `Prior.prefill`) and samples s new latent frames after it.
# Conditioning per window (what the window would have been conditioned on had it been a training clip):
#   class   the same label in every window;
#   actions the actions of the window's own frames (so actions must cover the whole video);
#   frames  window 0 gets the given real frames; window k > 0 the first n_cond_frames frames of the
#           window as already generated, i.e. decoded from window k-1 (whose latent frames cover the
#           start of window k) and rounded to uint8 like the output. In training the conditioning
#           frame is always the clip's first frame, which the clip's first latent frame also covers, so
#           this keeps the frames and the prefix tokens consistent; conditioning every window on the
#           original first frame instead would show the digit where the prefix says it no longer is.
#           The digit's identity travels in the prefix tokens and in these frames.
# Randomness: sample i's first window uses the same uniforms as sample_tokens (same seed, same tokens);
# later positions draw from a second generator seeded by (seed, 1), again one uniform per (sample, position).


def default_window_stride(window: int) -> int:
    """New latent frames per window when not given: half the window, so half is context."""
    return max(1, window // 2)


def window_starts(n_latent: int, window: int, stride: int) -> list[int]:
    """First latent frame of every window of `window` frames covering [0, n_latent): 0, stride, 2 stride,
    ...; the last one is placed to end exactly at n_latent (so it may add fewer than `stride` frames)."""
    if n_latent <= window:
        return [0]
    return list(range(0, n_latent - window, stride)) + [n_latent - window]


def check_long_sampling(n_frames: Optional[int], window_stride: Optional[int], window: int, time_factor: int) -> None:
    """The sample.n_frames / sample.window_stride checks (ValueError naming the key) for a prior of `window`
    latent frames over a VQ-VAE that makes `time_factor` frames of each."""
    latent_frames(n_frames, window, time_factor)
    window_stride_or_default(window_stride, window)


def window_stride_or_default(stride: Optional[int], window: int) -> int:
    """sample.window_stride, checked to be in 1..window; None = `default_window_stride(window)`."""
    if stride is None:
        return default_window_stride(window)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= window:
        raise ValueError(f"sample.window_stride: {stride!r} must be an integer in 1..{window} "
                         "(the prior's latent frames)")
    return int(stride)


def latent_frames(n_frames: Optional[int], window: int, time_factor: int) -> int:
    """Latent frames for a video of n_frames (None = the training length, window * time_factor)."""
    clip = window * time_factor
    if n_frames is None:
        return window
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < clip:
        raise ValueError(f"sample.n_frames: {n_frames!r} must be an integer >= the training clip length {clip}")
    if n_frames % time_factor:
        raise ValueError(f"sample.n_frames: {n_frames} is not a multiple of the VQ-VAE's temporal downsampling "
                         f"{time_factor} (one latent frame = {time_factor} frames)")
    return n_frames // time_factor


def draw_uniforms_long(n: int, seq_len: int, n_positions: int, seed: int) -> torch.Tensor:
    """(n, n_positions) uniforms: the first seq_len columns are `draw_uniforms(n, seq_len, seed)`, the rest
    come from a generator seeded by (seed, 1). Row i depends only on (seed, i, n_positions)."""
    first = draw_uniforms(n, seq_len, seed)
    rest_seed = int(np.random.SeedSequence((seed, 1)).generate_state(1)[0])
    rest = torch.rand(n, n_positions - seq_len, generator=torch.Generator(device="cpu").manual_seed(rest_seed))
    return torch.cat([first, rest], dim=1)


def _window_frames(vqvae, previous: torch.Tensor, shift: int, n_cond: int) -> torch.Tensor:
    """The conditioning frames of a window that starts `shift` latent frames after the window `previous`
    (B, t, h, w): frames [shift * f, shift * f + n_cond) of its decode (f frames per latent frame), as
    float (B, 3, n_cond, H, W) in [-0.5, 0.5] on uint8 levels, exactly like frames read from the store."""
    video = tokens_to_videos(vqvae, previous, batch_size=len(previous))  # (B, T, H, W, 3) uint8
    f = video.shape[1] // previous.shape[1]
    return to_float(video[:, shift * f:shift * f + n_cond]).to(previous.device)


def _decode_sliding(prior: Prior, size, cond, pick, bar, u, *, starts, vqvae):
    """One batch: the windows in order. Returns the tokens (size, n_latent * h * w) and each window's
    tokens (size, t * h * w) as the prior saw them."""
    cfg = prior.config
    t, L = cfg.latent_shape[0], cfg.seq_len
    hw = L // t  # positions per latent frame (h * w, times the codebooks)
    device = prior.codebook.device
    tokens = torch.empty(size, (starts[-1] + t) * hw, dtype=torch.long, device=device)
    windows, window, end = [], None, 0  # end: latent frames generated so far
    frames = cond["frames"]
    for start in starts:
        kept = end - start  # latent frames of the prefix (0 in the first window)
        new_window = torch.empty(size, L, dtype=torch.long, device=device)
        if window is not None:
            new_window[:, :kept * hw] = window[:, (t - kept) * hw:]
            if cfg.uses_frames:
                frames = _window_frames(vqvae, window.view(size, *cfg.latent_shape), t - kept, cfg.n_cond_frames)
        window = new_window
        actions = None
        if cfg.uses_actions:
            clip_frames = cfg.action_shape[0]
            first = start * (clip_frames // t)
            actions = cond["actions"][:, first:first + clip_frames]
        cache = pick.init_cache(size, label=cond["label"], cond_kv=prior.cross_kv(frames), actions=actions)
        prev = torch.zeros(size, dtype=torch.long, device=device)
        if kept:
            prior.prefill(window[:, :kept * hw], cache)
            prev = window[:, kept * hw - 1]
        _decode_positions(prior, cache, window, prev, range(kept * hw, L), lambda pos: u[:, start * hw + pos],
                          pick, bar)
        tokens[:, start * hw:(start + t) * hw] = window
        windows.append(window)
        end = start + t
    return tokens, windows


def sample_tokens_sliding(prior: Prior, n: int, n_latent_frames: int, *, window_stride: Optional[int] = None,
                          vqvae=None, temperature: float = 1.0, top_k: Optional[int] = None,
                          top_p: Optional[float] = None, label=None, frames: Optional[torch.Tensor] = None,
                          actions: Optional[torch.Tensor] = None, seed: int = 0, batch_size: int = 16,
                          progress: bool = False, return_windows: bool = False, compile="auto", dtype="auto",
                          kv_dtype="auto", first: int = 0):
    """Draw n token grids of n_latent_frames latent frames, (n, n_latent_frames, h, w[, C]) long on the CPU, by a
    sliding window over latent time (see the section comment above).

    window_stride: new latent frames per window, 1..t (default t // 2); smaller = more context and more
    windows. vqvae: needed by a frame-conditional prior when there is more than one window (later windows
    are conditioned on generated frames). actions: (n, n_frames, A), one per frame of the whole video
    (n_frames = n_latent_frames * frames per latent frame). Other arguments as in `sample_tokens`. With
    return_windows, also returns [(start latent frame, window tokens (n, t, h, w))] per window, as the
    prior saw them."""
    cfg = prior.config
    t = cfg.latent_shape[0]
    cond = {"label": label, "frames": frames, "actions": actions}
    n_frames = n_latent_frames * (cfg.action_shape[0] // t) if cfg.uses_actions else None
    _check(prior, n, temperature, top_k, top_p, cond, batch_size, n_frames)
    stride = window_stride_or_default(window_stride, t)
    if n_latent_frames < t:
        raise ValueError(f"n_latent_frames={n_latent_frames}: must be >= the prior's {t} latent frames")
    starts = window_starts(n_latent_frames, t, stride)
    if cfg.uses_frames and len(starts) > 1:
        if vqvae is None:
            raise ValueError("frame-conditional prior: later windows are conditioned on generated frames, "
                             "so pass vqvae= to decode them")
        f = vqvae.config.downsample[0]
        if stride * f + cfg.n_cond_frames > t * f:
            raise ValueError(f"sample.window_stride: {stride} leaves {(t - stride) * f} generated frames before "
                             f"the next window starts; frame conditioning needs prior.n_cond_frames="
                             f"{cfg.n_cond_frames} of them (use a smaller stride)")
    n_positions = n_latent_frames * (cfg.seq_len // t)
    was_training = prior.training
    prior.eval()
    try:
        with torch.inference_mode():
            out = torch.empty(n, n_positions, dtype=torch.long)
            per_window = [[] for _ in starts]
            bar = progress_bar(total=-(-n // batch_size) * n_positions, desc="sampling", unit="pos",
                               disable=not progress)
            uniforms = draw_uniforms_long(first + n, cfg.seq_len, n_positions, seed)[first:]
            pick = _Picker(prior, temperature, top_k, top_p,
                           use_compile(compile, prior, min(n, batch_size), -(-n // batch_size) * n_positions),
                           decode_dtypes(dtype, kv_dtype, prior.codebook.device))
            for start, size, part, u in _batches(prior, n, cond, batch_size, uniforms):
                tokens, windows = _decode_sliding(prior, size, part, pick, bar, u, starts=starts, vqvae=vqvae)
                out[start:start + size] = tokens.cpu()
                for collected, window in zip(per_window, windows):
                    collected.append(window.cpu())
            bar.close()
    finally:
        prior.train(was_training)
    out = out.view(n, n_latent_frames, *cfg.latent_shape[1:])
    if not return_windows:
        return out
    return out, [(a, torch.cat(ws).view(n, *cfg.latent_shape)) for a, ws in zip(starts, per_window)]


