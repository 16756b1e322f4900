"""Lightning wrappers around the plain models, and the one place a Trainer is built.

The models (videogpt.vqvae.VQVAE, videogpt.prior.Prior) know nothing about Lightning; these
modules add the optimiser, the logging and the checkpoint state. `fit()` owns resume: it
continues from `<ckpt_dir>/last.ckpt` when the run key (params + inputs) is unchanged, and
starts fresh otherwise.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from videogpt.distributed import launched_as_rank_zero, rank_and_world
from videogpt.fileio import write_text
from videogpt.video import to_float
from videogpt.vqvae import codebook_counts, mean_perplexity

log = logging.getLogger(__name__)

RUN_KEY_FILE = "run_key.json"
LAST = "last.ckpt"


class NonFiniteLossError(RuntimeError):
    pass


class _FiniteGuard:
    """Tracks whether every loss since the last check was finite, without a host sync per step.

    The flag lives on the device; it is read (one sync) only at logging intervals and before a
    checkpoint is written, so a checkpoint never holds weights updated by a NaN/inf loss.
    """

    def __init__(self):
        self.flag = None
        self.first_bad_step = None

    def update(self, loss: torch.Tensor):
        ok = torch.isfinite(loss.detach())
        self.flag = ok if self.flag is None else self.flag & ok

    def check(self, step: int, what: str, strategy=None):
        """Raise if a loss since the last check was not finite, on this rank or (given the strategy) on any
        other: every rank stops together instead of the others waiting forever in the next collective."""
        ok = self.flag is None or bool(self.flag)
        if strategy is not None:
            ok = strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            raise NonFiniteLossError(
                f"{what}: the training loss became NaN or inf at or before step {step}; training stopped. "
                "The last good checkpoint is kept; lower the learning rate or check the data.")
        self.flag = None


def as_video(batch_video: torch.Tensor) -> torch.Tensor:
    """A loader's clips as the VQ-VAE's float video: uint8 (B, T, H, W, 3) clips (ClipDataset(uint8=True)) are
    converted here, on the device they were copied to; float video passes as it is."""
    return to_float(batch_video) if batch_video.dtype == torch.uint8 else batch_video


class VQVAEModule(pl.LightningModule):
    def __init__(self, model, lr: float, log_every_n_steps: int = 25, compile: bool = False):
        super().__init__()
        self.model = model
        # A compiled *function*, not module: checkpoints keep the plain model's parameter names.
        self.forward_fn = torch.compile(model.forward) if compile else model.forward
        self.lr = lr
        self.log_every = log_every_n_steps
        self.guard = _FiniteGuard()

    def training_step(self, batch, batch_idx):
        out = self.forward_fn(as_video(batch[0]))
        self.guard.update(out["loss"])
        if (self.global_step + 1) % self.log_every == 0:  # the steps Lightning writes to the logger
            self.guard.check(self.global_step, "train_vqvae", self.trainer.strategy)
            self.log_dict({
                "train/loss": out["loss"].detach(),
                "train/recon_loss": out["recon_loss"].detach(),
                "train/commitment_loss": out["commitment_loss"].detach(),
                "train/perplexity": out["perplexity"].detach(),
                "train/codes_used": self.model.codes_used(),
            }, on_step=True, on_epoch=False)
        return out["loss"]

    def on_validation_epoch_start(self):
        cfg = self.model.config
        self.val_code_counts = torch.zeros(cfg.n_codebooks, cfg.n_codes, device=self.device)

    def validation_step(self, batch, batch_idx):
        out = self.model(as_video(batch[0]))
        cfg = self.model.config
        self.val_code_counts += codebook_counts(out["codes"], cfg.n_codes, cfg.n_codebooks)
        self.log_dict({"val/recon_loss": out["recon_loss"], "val/commitment_loss": out["commitment_loss"]},
                      on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self):
        # The perplexity of all validation codes of all ranks together: a mean of per-batch or per-rank
        # perplexities would under-report the codebook's usage. Several codebooks: their mean.
        counts = self.trainer.strategy.reduce(self.val_code_counts, reduce_op="sum")
        self.log("val/perplexity", mean_perplexity(counts))

    def on_save_checkpoint(self, checkpoint):
        self.guard.check(self.global_step, "train_vqvae", self.trainer.strategy)
        _save_rng(checkpoint)

    def on_load_checkpoint(self, checkpoint):
        _load_rng(checkpoint)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.9, 0.999))


class PriorModule(pl.LightningModule):
    def __init__(self, model, lr: float, weight_decay: float, warmup_steps: int, max_steps: int,
                 log_every_n_steps: int = 25, compile: bool = False):
        super().__init__()
        self.model = model
        self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.log_every = log_every_n_steps
        self.guard = _FiniteGuard()

    def _loss(self, batch):
        return self.loss_fn(batch["tokens"].long(), label=batch.get("label"), frames=batch.get("frames"),
                            actions=batch.get("actions"))

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.guard.update(loss)
        if (self.global_step + 1) % self.log_every == 0:  # the steps Lightning writes to the logger
            self.guard.check(self.global_step, "train_prior", self.trainer.strategy)
            self.log("train/bits_per_dim", loss.detach() / math.log(2), on_step=True, on_epoch=False)
            self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("val/bits_per_dim", loss / math.log(2), on_step=False, on_epoch=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint):
        self.guard.check(self.global_step, "train_prior", self.trainer.strategy)
        _save_rng(checkpoint)

    def on_load_checkpoint(self, checkpoint):
        _load_rng(checkpoint)

    def configure_optimizers(self):
        # No weight decay on norms, biases, embeddings (nanoGPT's rule: decay only matrices of linears/convs).
        decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr, betas=(0.9, 0.999))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr_factor(s, self.warmup_steps, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def cosine_lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 at max_steps (the paper's CosineAnnealingLR when warm-up is 0)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _save_rng(checkpoint: dict):
    """Every rank's generator states (the ranks draw different dropout masks: RankSeed), so that each rank of a
    resumed run continues its own stream. Only tensors and python primitives: the checkpoint must load with
    weights_only=True."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    states = [state]
    if rank_and_world()[1] > 1:
        states = [None] * rank_and_world()[1]
        torch.distributed.all_gather_object(states, state)
    checkpoint["rng"] = {"ranks": states}


def _load_rng(checkpoint: dict):
    rng = checkpoint.get("rng")
    if rng:
        states = rng["ranks"] if "ranks" in rng else [rng]  # the latter: checkpoints of one rank's state
        rank = rank_and_world()[0]
        state = states[rank] if rank < len(states) else states[0]
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class RankSeed(Callback):
    """Rank r > 0 re-seeds with seed + r once the process group exists (the model, built before, is the same on
    every rank): its dropout masks and other draws differ from the other ranks'. Rank 0 keeps the run's seed and
    stream, so a one-device run is unchanged."""

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer, pl_module, stage):
        if trainer.global_rank > 0:
            pl.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a kill mid-write never leaves a torn file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


class StepLogger(Callback):
    """Prints the step a run starts from (asserted by the resume test) and progress lines."""

    def __init__(self, name: str, every: int):
        self.name, self.every = name, every

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            print(f"[{self.name}] start_step={trainer.global_step} max_steps={trainer.max_steps}", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and (step % self.every == 0 or step == trainer.max_steps):
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            print(f"[{self.name}] step {step}/{trainer.max_steps} {shown}", flush=True)


def quiet_lightning():
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "dvclive"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def prepare_resume(ckpt_dir: str | Path, run_key: dict) -> str | None:
    """Return the checkpoint to resume from, or None (and clear stale checkpoints) to start fresh.

    `run_key` holds everything that defines the run (params of the stage, fingerprints of its
    inputs). A checkpoint made under a different key is deleted: changed params start over.

    Only rank 0 deletes and writes; the other ranks only read, and reach the same answer whenever they look:
    rank 0 deletes a stale last.ckpt before it writes the new key (atomically), so the new key is never seen
    beside an old checkpoint. No rank trains (or writes a checkpoint) before all have joined the process group,
    that is, before every rank has passed this point: that is the barrier.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    key_file = ckpt_dir / RUN_KEY_FILE
    same = key_file.is_file() and json.loads(key_file.read_text()) == run_key
    last = ckpt_dir / LAST
    if same and last.is_file():
        return str(last)
    if not launched_as_rank_zero():
        return None
    for child in ckpt_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    write_text(key_file, json.dumps(run_key, indent=2, sort_keys=True))
    return None


def finish_resume(ckpt_dir: str | Path) -> None:
    """After a completed run the checkpoints are no longer needed (the model is in models/).

    The folder is left empty, so its DVC hash is the same after every finished run, whatever the
    params: an experiment with other params does not make `dvc status` see a changed out.
    """
    for child in Path(ckpt_dir).iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def make_trainer(trainer_params, *, name: str, max_steps: int, ckpt_dir, live_dir, val_every: int,
                 checkpoint_every: int, seed: int, gradient_clip_val: float = 1.0, **overrides) -> pl.Trainer:
    """The one Trainer factory: precision, devices, strategy, logging and checkpointing from params."""
    from dvclive.lightning import DVCLiveLogger

    quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    tp = trainer_params
    precision = "32-true" if tp.precision in ("32", "32-true") else tp.precision
    # trainer.deterministic: bitwise determinism on CPU; on CUDA some kernels (embedding/scatter backward,
    # flash attention) have no deterministic version, so there it only warns. Off, cuDNN autotunes its kernels.
    on_cpu = not torch.cuda.is_available() or tp.accelerator == "cpu"
    deterministic = "warn" if tp.deterministic and not on_cpu else tp.deterministic
    logger = DVCLiveLogger(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    callbacks = [
        ModelCheckpoint(dirpath=str(ckpt_dir), filename="step{step}", every_n_train_steps=checkpoint_every,
                        save_last=True, save_top_k=0, enable_version_counter=False),
        StepLogger(name, every=tp.log_every_n_steps),
        RankSeed(seed),
    ]
    kwargs = dict(
        accelerator=tp.accelerator, devices=tp.devices, num_nodes=tp.num_nodes, strategy=tp.strategy,
        precision=precision, max_steps=max_steps, max_epochs=-1, logger=logger, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], gradient_clip_val=gradient_clip_val, deterministic=deterministic,
        benchmark=not tp.deterministic, accumulate_grad_batches=tp.accumulate_grad_batches,
        # Lightning counts val_check_interval in batches, max_steps and checkpoints in optimizer steps
        val_check_interval=val_every * tp.accumulate_grad_batches, check_val_every_n_epoch=None,
        log_every_n_steps=tp.log_every_n_steps,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=8, default_root_dir=str(ckpt_dir),
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)
