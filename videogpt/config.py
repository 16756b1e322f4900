"""The library's configuration: every key of params.yaml, typed, with defaults, documentation and ranges.

The pipeline's stages call `load()` once; a library user training on their own data builds the same
sections (or calls `parse` on a mapping) and gets the same checks. Unknown keys, wrong types and
out-of-range values fail here, before any work, with a message naming the key
(`prior.n_layr: unknown key; allowed: ...`), so a typo in `dvc exp run -S` is an error. Constraints of
the models themselves (powers of two, divisibility) belong to their config dataclasses (VQVAEConfig,
PriorConfig); `parse` runs those checks on the params and reports them as ParamsErrors naming the key.

The defaults here are those of the default run in params.yaml (a few minutes on a CPU); the paper's
hyper-parameters are in params/presets/. `python -m videogpt.config` prints every key.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type, or inconsistent."""


def _f(default, doc: str = "", *, lo=None, hi=None, lo_open=False, factory=None):
    """A schema field: default, documentation and an allowed range (inclusive unless lo_open)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DefaultDataParams:
    """The built-in moving-digits dataset (stage make_default_data)."""
    n_train: int = _f(160, "videos in train/", lo=1)
    n_test: int = _f(40, "videos in test/", lo=1)
    resolution: int = _f(64, "frame size in pixels (square)", lo=16)
    n_frames: int = _f(32, "frames per video", lo=1)
    max_digits: int = _f(1, "digits per video (1 or 2); the class is the first digit", lo=1, hi=2)
    digit_size: int = _f(28, "glyph height in pixels", lo=8)
    fps: int = _f(8, "frame rate written into the MP4 files", lo=1)
    seed: int = _f(0, "seed of the generator", lo=0)


@dataclass(frozen=True)
class DataParams:
    source: str = _f("data/default_videos", "input folder (train/ and test/ sub-folders, or one folder + split_ratio)")
    format: Literal["auto", "videos", "ucf101", "bair", "moving_mnist", "frames", "webdataset"] = _f(
        "auto", "layout of data.source; auto detects it")
    split_ratio: Optional[float] = _f(None, "test fraction when data.source has no train/test folders",
                                     lo=0.0, hi=1.0, lo_open=True)
    split_seed: int = _f(0, "seed of the random train/test split", lo=0)
    ucf_split: int = _f(1, "official UCF-101 split list (1, 2 or 3)", lo=1, hi=3)
    resolution: int = _f(32, "clip frame size: short side scaled to this, then centre crop", lo=1)
    sequence_length: int = _f(16, "frames per clip", lo=1)
    frame_stride: int = _f(1, "take every k-th frame inside a clip", lo=1)
    clip_stride: Optional[int] = _f(None, "frames between clip starts; null = non-overlapping clips", lo=1)
    fps: Optional[float] = _f(None, "resample videos to this frame rate; null = native", lo=0.0, lo_open=True)
    num_workers: int = _f(2, "decoder processes", lo=1)
    decode_timeout: float = _f(120.0, "seconds before a hanging ffmpeg call is killed", lo=0.0, lo_open=True)
    hflip: bool = _f(False, "random horizontal flips when training")
    label_key: Optional[str] = _f(None, "data.format webdataset: the key of each sample's JSON holding its class; "
                                        "null = unlabeled")
    split_key: Optional[str] = _f(None, "data.format webdataset: the JSON key holding train/test; null = split "
                                        "by data.split_ratio")


@dataclass(frozen=True)
class VQVAEParams:
    n_hiddens: int = _f(64, "channels of the encoder/decoder trunk", lo=1)
    res_hiddens: int = _f(32, "bottleneck channels of the residual blocks", lo=1)
    n_res_layers: int = _f(1, "attention-residual blocks in the encoder and decoder", lo=0)
    downsample: tuple[int, int, int] = _f(None, "per-axis (T, H, W) downsampling, powers of two",
                                          factory=lambda: (4, 4, 4))
    n_codes: int = _f(128, "codebook size", lo=2)
    embedding_dim: int = _f(32, "codebook vector size", lo=1)
    n_codebooks: int = _f(1, "codebooks, each quantising its own embedding_dim slice of the latent channels (the "
                             "paper's Table 7); > 1 adds a codebook axis to the latent grid", lo=1)
    attention: bool = _f(True, "axial attention in the residual blocks (false = the paper's ablation)")
    n_heads: int = _f(2, "heads of the axial attention", lo=1)
    beta: float = _f(0.25, "commitment loss weight", lo=0.0)
    ema_decay: float = _f(0.99, "codebook EMA decay", lo=0.0, hi=1.0, lo_open=True)
    lr: float = _f(7e-4, "Adam learning rate (constant)", lo=0.0, lo_open=True)
    max_steps: int = _f(450, "optimizer steps", lo=1)
    batch_size: int = _f(16, "clips per step (per device)", lo=1)
    num_workers: int = _f(0, "DataLoader workers", lo=0)
    checkpoint_every: int = _f(150, "steps between resumable checkpoints", lo=1)
    val_every: int = _f(150, "steps between validation passes", lo=1)
    seed: Optional[int] = _f(None, "seed of the VQ-VAE's training (init, data order); null = the top-level seed",
                             lo=0)


# Inference precision of tokenize, the I3D and bits/dim (videogpt.distributed.inference_autocast): bf16 autocast
# or none. The codebook's distances and the Frechet distance stay float32/float64 either way.
InferencePrecision = Literal["32", "bf16"]


@dataclass(frozen=True)
class TokenizeParams:
    batch_size: int = _f(64, "clips per VQ-VAE encode batch", lo=1)
    num_workers: int = _f(0, "DataLoader workers reading the clip store", lo=0)
    precision: InferencePrecision = _f("32", "encoder precision: 32 or bf16 autocast (nearest-code search in float32)")


@dataclass(frozen=True)
class PriorParams:
    n_layer: int = _f(4, "transformer blocks", lo=1)
    n_head: int = _f(4, "attention heads", lo=1)
    n_embd: int = _f(128, "transformer width", lo=1)
    dropout: float = _f(0.0, "residual dropout", lo=0.0, hi=1.0)
    attn_dropout: float = _f(0.0, "attention-probability dropout", lo=0.0, hi=1.0)
    condition: Literal["none", "class", "frames", "actions", "frames+actions"] = _f(
        "none", "conditioning of the prior: class labels, the first frames, the per-frame actions, or frames+actions")
    n_cond_frames: int = _f(1, "first frames given to the frame-conditional prior", lo=1)
    resnet_depth: Literal[18, 34] = _f(18, "depth of the 3D ResNet encoding the conditioning frames")
    resnet_dim: int = _f(64, "output channels of that ResNet", lo=1)
    lr: float = _f(2e-3, "AdamW peak learning rate (cosine decay over max_steps)", lo=0.0, lo_open=True)
    weight_decay: float = _f(0.0, "AdamW weight decay", lo=0.0)
    warmup_steps: int = _f(50, "linear warm-up steps", lo=0)
    max_steps: int = _f(600, "optimizer steps", lo=1)
    batch_size: int = _f(16, "token grids per step (per device)", lo=1)
    num_workers: int = _f(0, "DataLoader workers", lo=0)
    checkpoint_every: int = _f(200, "steps between resumable checkpoints", lo=1)
    val_every: int = _f(200, "steps between validation passes", lo=1)
    seed: Optional[int] = _f(None, "seed of the prior's training (init, data order, dropout); null = the top-level "
                                   "seed. A prior.seed sweep reuses one VQ-VAE and its tokens", lo=0)


@dataclass(frozen=True)
class SampleParams:
    n_samples: int = _f(16, "generated videos written as MP4 and shown in the grids (at most; the stage "
                            "generates eval.n_generated x eval.n_trials videos, the FVD sets)", lo=1)
    batch_size: int = _f(16, "videos generated in parallel", lo=1)
    temperature: float = _f(1.0, "softmax temperature (1 = the paper)", lo=0.0)
    top_k: Optional[int] = _f(None, "keep the k most likely codes; null = all (the paper)", lo=1)
    top_p: Optional[float] = _f(None, "nucleus sampling mass; null = off (the paper)", lo=0.0, hi=1.0, lo_open=True)
    seed: int = _f(0, "sampling seed", lo=0)
    n_frames: Optional[int] = _f(None, "frames per generated video; null = the training clip length; longer videos "
                                 "are sampled by a sliding window over latent time", lo=1)
    window_stride: Optional[int] = _f(None, "new latent frames per sliding window (with sample.n_frames); null = half "
                                      "the prior's latent frames", lo=1)
    compile: Literal["auto", True, False] = _f("auto", "run the decode step under torch.compile (CUDA: with CUDA "
                                               "graphs; CPU: Inductor's packed few-row GEMMs); auto = on CUDA, and "
                                               "on the CPU for runs long enough to repay the compile (measured "
                                               "rule: videogpt.sampling.use_compile)")
    dtype: Literal["auto", "float32", "bfloat16"] = _f(
        "auto", "the decode step's dtype (weights, activations); auto = bfloat16 on CUDA, float32 elsewhere "
                "(videogpt.sampling.DECODE_DTYPE_AUTO; bf16 costs the default model < 0.01 bits/dim, README)")
    kv_dtype: Literal["auto", "float32", "bfloat16"] = _f("auto", "the key/value cache's dtype; auto = sample.dtype")


@dataclass(frozen=True)
class EvalParams:
    i3d_weights: Optional[str] = _f(None, "path of i3d_pretrained_400.pt; null = FVD reported as null")
    c3d_weights: Optional[str] = _f(None, "path of TGANv2's UCF-101 C3D conv3d_deepnetA_ucf.npz (mean2.npz beside it) "
                                          "for the Inception Score of the samples; null = IS reported as null")
    fvd_protocol: Literal["videogpt", "stylegan_v", "tf_hub"] = _f(
        "videogpt", "named FVD protocol (videogpt.metrics.protocol.PROTOCOLS): counts, real-subset and window rules, "
                    "I3D flavour, covariance estimator, square root; videogpt = VideoGPT's (256/256, BN eps "
                    "1e-5), stylegan_v = StyleGAN-V's (2048/2048, its TorchScript I3D), tf_hub = the original "
                    "FVD's network (TF BN eps 1e-3, TF1 resize)")
    n_real: Optional[int] = _f(64, "real clips per trial (at most the protocol's split); null = the protocol's "
                                   "count; fewer than the protocol's makes the FVD comparable with no paper", lo=2)
    n_generated: Optional[int] = _f(None, "generated videos per trial; null = eval.n_real; generated video i of a "
                                          "trial is conditioned on the trial's real clip i mod n_real", lo=2)
    n_trials: int = _f(1, "FVD trials, each with its own generated set (and, per the protocol, real subset); "
                          "reported as mean and population std (the paper: 10)", lo=1)
    seed: int = _f(0, "seed of the real subsets and windows (trial t draws with (seed, t))", lo=0)
    allow_i3d_torchscript: bool = _f(
        False, "opt in to loading StyleGAN-V's i3d_torchscript.pt (eval.i3d_weights) for fvd_protocol "
               "stylegan_v; accepted only when its SHA-256 equals the pinned one (TorchScript can run code)")
    batch_size: int = _f(16, "clips per I3D / VQ-VAE batch", lo=1)
    precision: InferencePrecision = _f("32", "I3D and bits/dim precision: 32 or bf16 autocast (statistics and "
                                             "Frechet distance in float64)")


@dataclass(frozen=True)
class ClassifierParams:
    """The small video classifier of the sample-quality score (videogpt.metrics.classifier), trained on the labelled
    training clips alone: it changes with the data and these keys, never with the VQ-VAE or prior params."""
    width: int = _f(16, "channels of the first 3D conv block (doubled in each next block)", lo=1)
    n_blocks: int = _f(3, "conv blocks (3x3x3 conv, batch norm, ReLU, 2x max pool)", lo=1)
    input_pool: int = _f(2, "spatial average pool of the input frames (the score rates shapes, not pixel detail); "
                            "1 = none", lo=1)
    lr: float = _f(2e-3, "Adam learning rate (constant)", lo=0.0, lo_open=True)
    max_steps: int = _f(300, "optimizer steps", lo=1)
    batch_size: int = _f(32, "clips per step", lo=1)
    seed: int = _f(0, "seed of the classifier's init and data order", lo=0)


@dataclass(frozen=True)
class TrainerParams:
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = _f("auto", "Lightning accelerator")
    devices: int = _f(1, "devices per node", lo=1)
    num_nodes: int = _f(1, "nodes", lo=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = _f("auto", "Lightning strategy")
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"] = _f("32", "training precision")
    compile: bool = _f(False, "torch.compile the model")
    log_every_n_steps: int = _f(25, "steps between logged training metrics", lo=1)
    accumulate_grad_batches: int = _f(1, "batches whose gradients are summed into one optimizer step (effective batch "
                                         "= batch_size x devices x num_nodes x this; steps count optimizer steps)", lo=1)
    checkpoint_activations: bool = _f(False, "activation checkpointing: keep only each block's input and recompute "
                                             "its activations in the backward pass (less memory, ~1/3 more compute)")
    deterministic: bool = _f(True, "deterministic algorithms: bitwise repeatable on CPU (on CUDA only a warning where "
                                   "none exists); false lets cuDNN pick the fastest kernels (cudnn.benchmark)")


@dataclass(frozen=True)
class StorageParams:
    root: Optional[str] = _f(None, "where preprocess and tokenize write their stores: null = data/ as always; a folder "
                                   "or an fsspec URL (s3://bucket/prefix, gs://..., file:///...) = immutable "
                                   "<root>/<stage>/<content hash>/ prefixes, the dvc outs becoming pointer files")


Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class ComputeParams:
    engine: Engine = _f("local", "where the per-item work of preprocess (decoding) and tokenize (encoding) "
                                                  "runs: local = this machine (data.num_workers decoders); ray = Ray "
                                                  "workers on the cluster at $RAY_ADDRESS, else on a local Ray (the "
                                                  "cluster extra). The same bytes either way")
    workers: int = _f(2, "Ray workers (actors) of a compute.engine: ray stage, one CPU each", lo=1)
    gpus_per_worker: float = _f(0.0, "GPUs each Ray worker running a model holds (tokenize's VQ-VAE); 0 = CPU; a "
                                     "fraction shares a GPU", lo=0.0)


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, "seed of the trainings whose own seed (vqvae.seed, prior.seed) is null", lo=0)
    default_data: DefaultDataParams = _f(None, factory=DefaultDataParams)
    data: DataParams = _f(None, factory=DataParams)
    vqvae: VQVAEParams = _f(None, factory=VQVAEParams)
    tokenize: TokenizeParams = _f(None, factory=TokenizeParams)
    prior: PriorParams = _f(None, factory=PriorParams)
    sample: SampleParams = _f(None, factory=SampleParams)
    eval: EvalParams = _f(None, factory=EvalParams)
    classifier: ClassifierParams = _f(None, factory=ClassifierParams)
    trainer: TrainerParams = _f(None, factory=TrainerParams)
    storage: StorageParams = _f(None, factory=StorageParams)
    compute: ComputeParams = _f(None, factory=ComputeParams)


    def training_seed(self, stage: Literal["vqvae", "prior"]) -> int:
        """The seed of one training: its own `<stage>.seed`, else the top-level `seed`."""
        own = getattr(self, stage).seed
        return self.seed if own is None else own


# --------------------------------------------------------------------------------------------
# Parsing


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if origin is tuple:
        args = typing.get_args(tp)
        return f"a list of {len(args)} {args[0].__name__}s"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key)
    if value is None:
        raise ParamsError(f"{key}: null is not allowed; expected {_describe(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        # YAML may give 32 for "32": compare as written
        for a in allowed:
            if value == a or (isinstance(a, str) and not isinstance(value, bool) and str(value) == a):
                return a
        raise ParamsError(f"{key}: {value!r} is not allowed; expected {_describe(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ParamsError(f"{key}: {value!r} is not {_describe(tp)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: {value!r} is not true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: {value!r} is not a number")
        if not math.isfinite(value):
            raise ParamsError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: {value!r} is not a string")
        return value
    raise TypeError(f"unsupported schema type {tp} for {key}")


def _check_range(value, meta: dict, key: str):
    values = value if isinstance(value, tuple) else (value,)
    lo, hi = meta.get("lo"), meta.get("hi")
    for v in values:
        if v is None or isinstance(v, (str, bool)):
            continue
        if lo is not None and (v <= lo if meta.get("lo_open") else v < lo):
            bound = f"> {lo}" if meta.get("lo_open") else f">= {lo}"
            raise ParamsError(f"{key}: {value!r} is out of range; must be {bound}"
                              + (f" and <= {hi}" if hi is not None else ""))
        if hi is not None and v > hi:
            raise ParamsError(f"{key}: {value!r} is out of range; must be <= {hi}")


def check_ranges(section, prefix: str) -> None:
    """The schema's ranges for a section built by hand (not through `parse`), e.g. in tests and tools."""
    for f in dataclasses.fields(section):
        _check_range(getattr(section, f.name), f.metadata, f"{prefix}.{f.name}")


def _build(cls, raw, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{prefix or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(f"{where}{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw.get(name), key)
        elif name in raw:
            value = _coerce(raw[name], tp, key)
            _check_range(value, f.metadata, key)
            kwargs[name] = value
    return cls(**kwargs)


def _check_models(p: Params) -> None:
    """Build the model configs from the params, so the models' own checks run before any work."""
    from videogpt.prior import PriorConfig  # torch: imported only once the cheap checks passed
    from videogpt.sampling import check_long_sampling
    from videogpt.vqvae import VQVAEConfig
    d = p.data
    try:
        vq = VQVAEConfig.from_params(p.vqvae, input_shape=(d.sequence_length, d.resolution, d.resolution))
        # The class count comes from the data (train_prior checks it against the token store); any valid
        # count stands in for it here.
        # So does the action width (train_prior reads it from the clip store).
        prior = PriorConfig.from_params(p.prior, vq, n_classes=2 if p.prior.condition == "class" else 0,
                                        frame_shape=(d.resolution, d.resolution), action_shape=(d.sequence_length, 1))
        check_long_sampling(p.sample.n_frames, p.sample.window_stride, prior.latent_shape[0], vq.downsample[0])
    except ValueError as err:  # their messages name the params key
        raise ParamsError(str(err)) from None


def _check_consistency(p: Params) -> None:
    from videogpt.prior import FRAME_CONDITIONS
    d, g = p.data, p.prior
    _check_models(p)
    if g.condition in FRAME_CONDITIONS and g.n_cond_frames >= d.sequence_length:
        raise ParamsError(f"prior.n_cond_frames: {g.n_cond_frames} must be smaller than "
                          f"data.sequence_length={d.sequence_length}")
    if g.warmup_steps >= g.max_steps:
        raise ParamsError(f"prior.warmup_steps: {g.warmup_steps} must be smaller than prior.max_steps={g.max_steps}")
    if p.sample.top_k is not None and p.sample.top_k > p.vqvae.n_codes:
        raise ParamsError(f"sample.top_k: {p.sample.top_k} exceeds vqvae.n_codes={p.vqvae.n_codes}")
    if p.storage.root is not None:
        from videogpt.storage import location_problem
        if problem := location_problem(p.storage.root):
            raise ParamsError(f"storage.root: {problem}")
    if p.compute.engine == "ray":
        import importlib.util
        if importlib.util.find_spec("ray") is None:
            raise ParamsError("compute.engine: ray is not installed here; pip install -e '.[cluster]' (or set "
                              "compute.engine: local)")
    if p.trainer.strategy == "fsdp":
        # Lightning's own refusal of fsdp on a CPU names no key; FSDP on GPUs is refused too (see the message).
        where = " (and trainer.accelerator: cpu has no FSDP at all)" if p.trainer.accelerator == "cpu" else ""
        raise ParamsError(f"trainer.strategy: fsdp is not supported{where}: FSDP's mixed precision casts the "
                          "VQ-VAE's codebook buffers (EMA counts and sums) to bf16, where they stop moving, and both "
                          "models fit one GPU at the presets' sizes with trainer.checkpoint_activations and "
                          "trainer.accumulate_grad_batches; use trainer.strategy: ddp")


def parse(raw: dict) -> Params:
    """Validate a params mapping (as loaded from params.yaml) into a Params object."""
    params = _build(Params, raw, "")
    _check_consistency(params)
    return params


def load(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml; raises ParamsError naming the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run stages from the repository root)")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    return parse(raw)


def to_dict(params) -> dict:
    """Plain nested dict (tuples as lists), for JSON/YAML and checkpoint metadata."""
    def conv(x):
        if isinstance(x, tuple):
            return [conv(i) for i in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    return conv(dataclasses.asdict(params))


def describe_schema() -> str:
    """Human-readable listing of every key, its type, default and range (for the README / --help)."""
    lines = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rng = ""
            if f.metadata.get("lo") is not None or f.metadata.get("hi") is not None:
                lo = f.metadata.get("lo")
                rng = f" range {'(' if f.metadata.get('lo_open') else '['}{lo}, {f.metadata.get('hi') or 'inf'}]"
            lines.append(f"{key}: {_describe(tp)}, default {default!r}{rng} — {f.metadata.get('doc', '')}")
    walk(Params, "")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe_schema())
