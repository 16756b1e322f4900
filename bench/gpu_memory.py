"""Per-GPU peak memory of the presets' training steps, estimated on a CPU before renting a GPU.

    python -m bench.gpu_memory [--preset ucf101] [--device-memory 80] [--threads N]

For each preset in params/presets/ (or the one named) and each model (VQ-VAE, prior), the bytes autograd saves
for the backward pass are MEASURED on this CPU: small forward passes in training mode under bf16 autocast
(trainer.precision: bf16-mixed), every tensor handed to autograd's saved-tensor hook counted once per storage.
Each model is run at batch 1 and 2 and at two sizes, so that the batch-independent part (the bf16 copies of the
weights) drops out and the rest splits into what grows with the data and what does not:

    prior:  A(B) = B * [ n_layer * (L * a_tok + a_smp) + L * b_tok + b_smp ]         L = t*h*w tokens
            (measured at n_layer 1 and 2 and t = 1 and 2 on an 8x8 grid: four unknowns, four differences;
            flash-style attention keeps no L x L matrix, so every term is linear in L)
    VQ-VAE: A(B) = B * [ V * a_vox + a_smp ]                                          V = T*H*W input voxels
            (measured at two reduced heights; the network is convolutional and its attention axial)

and scaled to the preset's size. The per-GPU peak of one training step is then

    peak = 18 B/param * P                 fp32 weights, fp32 gradients, Adam's two fp32 moments, bf16 weight copies
         + A(b)                           saved activations of the micro-batch b = batch_size (per device)
         + transient(b)                   prior: the float32 logits' gradient and its bf16 copy, b*L*K*6 bytes;
                                          with checkpointing also one block recomputed in the backward pass
         + 1 GiB                          CUDA context and allocator slack

with activation checkpointing (trainer.checkpoint_activations) measured the same way with the model's own
set_activation_checkpointing(True). For each paper batch (32, the presets' effective batch) and each
trainer.accumulate_grad_batches k in 1, 2, 4, ..., the micro-batch is 32 / (k * devices). A setting FITS when
its peak is at most 90% of --device-memory (GB = 1e9 bytes): the caching allocator's fragmentation needs room.
The recommended setting fits both models (the two keys are shared by both trainings): without checkpointing
where possible (a third more compute), then with the fewest accumulation steps. On a GPU,
bench.gpu measures the real peak of the presets' steps (torch.cuda.max_memory_allocated) to compare.
Prints one JSON object.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from bench.common import REPO, emit, log, parser, set_threads
from videogpt.config import load
from videogpt.prior import Prior, PriorConfig
from videogpt.vqvae import VQVAE, VQVAEConfig

PRESETS = REPO / "params" / "presets"
PAPER_BATCH = 32          # the paper's batch for every model and dataset (Tables 8 and 9)
STATIC_BYTES_PER_PARAM = 18
CONTEXT_BYTES = 2 ** 30
FIT_FRACTION = 0.9
ACCUMULATION = (1, 2, 4, 8, 16, 32)
GRID = (8, 8)             # the prior's measurement grid (h, w)


def preset_models(name: str):
    """(params, VQVAEConfig, PriorConfig) of params/presets/<name>.yaml, as the stages would build them."""
    params = load(PRESETS / f"{name}.yaml")
    d = params.data
    vq = VQVAEConfig.from_params(params.vqvae, (d.sequence_length, d.resolution, d.resolution))
    n_classes = 101 if params.prior.condition == "class" else 0  # UCF-101's classes (the only labelled preset)
    prior = PriorConfig.from_params(params.prior, vq, n_classes=n_classes, frame_shape=(d.resolution, d.resolution))
    return params, vq, prior


def saved_bytes(forward) -> int:
    """Bytes of the distinct storages autograd saves for backward while `forward()` runs (bf16 autocast)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        forward()
    return sum(storages.values())


def _prior_forward(cfg: PriorConfig, batch: int, checkpoint: bool):
    torch.manual_seed(0)
    model = Prior(cfg, torch.randn(cfg.n_codes, cfg.embedding_dim)).train()
    model.set_activation_checkpointing(checkpoint)
    tokens = torch.randint(0, cfg.n_codes, (batch, *cfg.latent_shape))
    frames = torch.rand(batch, 3, cfg.n_cond_frames, *cfg.frame_shape) - 0.5 if cfg.uses_frames else None
    label = torch.zeros(batch, dtype=torch.long) if cfg.condition == "class" else None
    return lambda: model.loss(tokens, label=label, frames=frames)


def _per_sample(build) -> float:
    """Saved bytes of batch 2 minus batch 1: one sample's activations, without the batch-independent part."""
    return float(saved_bytes(build(2)) - saved_bytes(build(1)))


def measure_prior(cfg: PriorConfig, checkpoint: bool) -> dict:
    """The prior's activation coefficients (bytes): per layer per token a_tok, per layer per sample a_smp (the
    cross-attention keys/values), outside the layers per token b_tok (embeddings, head, loss) and per sample
    b_smp (the frame encoder)."""
    hw = GRID[0] * GRID[1]
    s = {}
    for layers in (1, 2):
        for t in (1, 2):
            # attn_dropout 0: CUDA's fused kernels keep no L x L matrix with dropout either (CPU's path does)
            small = PriorConfig(**{**vars(cfg), "latent_shape": (t, *GRID), "n_layer": layers, "attn_dropout": 0.0})
            s[layers, t] = _per_sample(lambda b: _prior_forward(small, b, checkpoint))
    per_layer = {t: s[2, t] - s[1, t] for t in (1, 2)}
    outside = {t: s[1, t] - per_layer[t] for t in (1, 2)}
    a_tok = (per_layer[2] - per_layer[1]) / hw
    b_tok = (outside[2] - outside[1]) / hw
    return {"a_tok": a_tok, "a_smp": per_layer[1] - a_tok * hw, "b_tok": b_tok, "b_smp": outside[1] - b_tok * hw}


def prior_activations(c: dict, cfg: PriorConfig, batch: int) -> float:
    L = cfg.seq_len
    return batch * (cfg.n_layer * (L * c["a_tok"] + c["a_smp"]) + L * c["b_tok"] + c["b_smp"])


def measure_vqvae(cfg: VQVAEConfig, checkpoint: bool) -> dict:
    """The VQ-VAE's activation coefficients (bytes): per input voxel a_vox, per sample a_smp."""
    T = cfg.input_shape[0]
    unit = 2 * max(cfg.downsample[1:])  # reduced heights and width, divisible by the downsampling
    heights = (unit, 2 * unit)
    per = {}
    for h in heights:
        small = VQVAEConfig(**{**vars(cfg), "input_shape": (T, h, unit)})

        def build(batch, small=small):
            torch.manual_seed(0)
            model = VQVAE(small).train()
            model.set_activation_checkpointing(checkpoint)
            x = torch.rand(batch, 3, *small.input_shape) - 0.5
            with torch.no_grad():
                model(x)  # the data-dependent codebook initialisation happens once, outside the count
            return lambda: model(x)["loss"]
        per[h] = _per_sample(build)
    a_vox = (per[heights[1]] - per[heights[0]]) / (T * unit * unit)
    return {"a_vox": a_vox, "a_smp": per[heights[0]] - a_vox * T * heights[0] * unit}


def vqvae_activations(c: dict, cfg: VQVAEConfig, batch: int) -> float:
    return batch * (math.prod(cfg.input_shape) * c["a_vox"] + c["a_smp"])


def n_params(model_cls, cfg, *args) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in model_cls(cfg, *args).parameters())


def model_rows(params_count: int, activations, transient, device_bytes: float, devices: int) -> list[dict]:
    """One row per (accumulation, checkpointing): micro-batch, peak GB, fits."""
    rows = []
    for ckpt in (False, True):
        for k in ACCUMULATION:
            if PAPER_BATCH % (k * devices):
                continue
            b = PAPER_BATCH // (k * devices)
            peak = STATIC_BYTES_PER_PARAM * params_count + activations(ckpt, b) + transient(ckpt, b) + CONTEXT_BYTES
            rows.append({"accumulate_grad_batches": k, "checkpoint_activations": ckpt, "batch_size": b,
                         "peak_gb": round(peak / 1e9, 2), "fits": peak <= FIT_FRACTION * device_bytes})
    return rows


def recommend(vq_rows: list[dict], prior_rows: list[dict]) -> dict | None:
    """The setting (shared by both trainings) that fits both: no checkpointing if possible (it costs a third more
    compute, accumulation almost nothing at these micro-batches), then the fewest accumulation steps."""
    key = ("accumulate_grad_batches", "checkpoint_activations")
    fits = {tuple(r[k] for k in key) for r in vq_rows if r["fits"]} & \
        {tuple(r[k] for k in key) for r in prior_rows if r["fits"]}
    if not fits:
        return None
    k, ckpt = min(fits, key=lambda s: (s[1], s[0]))
    return {"accumulate_grad_batches": k, "checkpoint_activations": ckpt, "batch_size": PAPER_BATCH // k}


def estimate(name: str, device_gb: float) -> dict:
    params, vq, prior = preset_models(name)
    devices = params.trainer.devices * params.trainer.num_nodes
    device_bytes = device_gb * 1e9
    log(f"{name}: measuring the VQ-VAE")
    vq_c = {ckpt: measure_vqvae(vq, ckpt) for ckpt in (False, True)}
    log(f"{name}: measuring the prior")
    pr_c = {ckpt: measure_prior(prior, ckpt) for ckpt in (False, True)}
    p_vq, p_pr = n_params(VQVAE, vq), n_params(Prior, prior, torch.zeros(prior.n_codes, prior.embedding_dim))
    n_res = 2 * vq.n_res_layers  # checkpointed residual blocks (encoder and decoder)

    def vq_act(ckpt, b):
        return vqvae_activations(vq_c[ckpt], vq, b)

    def vq_transient(ckpt, b):  # one residual block recomputed in the backward pass
        return (vq_act(False, b) - vq_act(True, b)) / n_res if ckpt else 0.0

    def pr_act(ckpt, b):
        return prior_activations(pr_c[ckpt], prior, b)

    def pr_transient(ckpt, b):
        logits = b * prior.seq_len * prior.n_codes * 6
        block = b * (prior.seq_len * pr_c[False]["a_tok"] + pr_c[False]["a_smp"]) if ckpt else 0.0
        return logits + block

    vq_rows = model_rows(p_vq, vq_act, vq_transient, device_bytes, devices)
    pr_rows = model_rows(p_pr, pr_act, pr_transient, device_bytes, devices)
    per_tc = pr_c[False]["a_tok"] / prior.n_embd
    return {
        "devices": devices, "device_memory_gb": device_gb,
        "preset": {"vqvae.batch_size": params.vqvae.batch_size, "prior.batch_size": params.prior.batch_size,
                   "trainer.accumulate_grad_batches": params.trainer.accumulate_grad_batches,
                   "trainer.checkpoint_activations": params.trainer.checkpoint_activations},
        "vqvae": {"params": p_vq, "input_shape": list(vq.input_shape),
                  "coefficients_bytes": {str(k): {n: round(v, 1) for n, v in c.items()} for k, c in vq_c.items()},
                  "settings": vq_rows},
        "prior": {"params": p_pr, "seq_len": prior.seq_len, "n_layer": prior.n_layer, "n_embd": prior.n_embd,
                  "bytes_per_layer_per_token_channel": round(per_tc, 2),
                  "coefficients_bytes": {str(k): {n: round(v, 1) for n, v in c.items()} for k, c in pr_c.items()},
                  "settings": pr_rows},
        "recommended": recommend(vq_rows, pr_rows),
    }


FORMULA = ("peak = 18 B/param x P + A(b) + transient(b) + 1 GiB; A(b) = b x [n_layer x (L x a_tok + a_smp) + "
           "L x b_tok + b_smp] (prior), b x [voxels x a_vox + a_smp] (VQ-VAE), coefficients measured under bf16 "
           "autocast on CPU; transient = b x L x K x 6 (prior logits' gradient) + one recomputed block with "
           "checkpointing; b = 32 / (accumulate_grad_batches x devices); fits when peak <= 90% of device memory")


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None, help="one of params/presets/*.yaml (default: all)")
    ap.add_argument("--device-memory", type=float, default=80.0, help="GB per GPU (default 80)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    names = [args.preset] if args.preset else sorted(p.stem for p in Path(PRESETS).glob("*.yaml"))
    result = {"bench": "gpu_memory", "formula": FORMULA,
              "presets": {name: estimate(name, args.device_memory) for name in names}}
    return emit(result)


if __name__ == "__main__":
    main()
