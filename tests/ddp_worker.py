"""Worker for tests/test_ddp.py: a few VQ-VAE and prior training steps under Lightning DDP (2 CPU processes, gloo),
then every rank saves its full state (parameters and buffers) for the test to compare.

    python tests/ddp_worker.py modules <clip store> <out dir> <steps>
    python tests/ddp_worker.py stage   <clip store> <out dir> <steps>

Lightning's DDP launcher starts rank 1 by re-executing this script (same argv, LOCAL_RANK=1), so everything
runs under the __main__ guard and rank 0 waits for rank 1 before it exits.

Mode `modules` (VQVAEModule / PriorModule + make_trainer, as the stages build them), three runs in order:
  vqvae        - the VQ-VAE; BatchNorm synchronised only where torch supports it (CUDA);
  prior        - the prior, on random token grids;
  vqvae_nosync - the VQ-VAE run again with the codebook's own DDP calls switched off (videogpt.vqvae._ddp
                 patched to False): a control showing that the comparison detects a codebook that is not
                 synchronised. The test expects its codebook to differ between ranks.
Mode `stage`: the real videogpt.training.train_vqvae (the train_vqvae stage's code) with trainer.devices=2,
strategy=ddp, accelerator=cpu; make_trainer is wrapped only to add the callback that saves each rank's state.
Each rank also records a checksum of every batch it trained on (the ranks must see different data), and the
indices of the test batches its share of the end-of-training report computed (report_batches_rank<r>.json).
In mode `modules`, after the prior's run every rank computes bits/dim of the random grids together
(bits_rank<r>.json), for the test to compare with one rank alone.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from pytorch_lightning.callbacks import Callback  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

BATCH = 4


class BatchChecksums(Callback):
    """Records a checksum of each training batch on this rank."""

    def __init__(self):
        self.sums = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch["tokens"]
        self.sums.append(float(x.double().sum()))


class RandomTokens(Dataset):
    def __init__(self, n: int, shape, n_codes: int):
        g = torch.Generator().manual_seed(123)
        self.tokens = torch.randint(0, n_codes, (n, *shape), generator=g)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"tokens": self.tokens[i]}


def trainer_params():
    from videogpt.config import TrainerParams
    return TrainerParams(accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", precision="32",
                         log_every_n_steps=1)


class SaveState(Callback):
    """At the end of training: every rank writes <name>_rank<r>.pt (state dict, batch checksums, step), then
    waits for the other rank, so all files exist when rank 0 returns."""

    def __init__(self, name: str, out: Path):
        self.name, self.out = name, out
        self.sums = BatchChecksums()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sums.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save({"state": state, "batch_sums": self.sums.sums, "global_step": trainer.global_step,
                    "world_size": trainer.world_size}, self.out / f"{self.name}_rank{trainer.global_rank}.pt")
        trainer.strategy.barrier()


def fit(name: str, module, loader, out: Path, steps: int, **overrides):
    from videogpt.lightning import make_trainer
    trainer = make_trainer(trainer_params(), name=name, max_steps=steps, ckpt_dir=out / f"ckpt_{name}",
                           live_dir=out / f"live_{name}", val_every=10_000, checkpoint_every=10_000, seed=0,
                           **overrides)
    trainer.callbacks.append(SaveState(name, out))
    trainer.fit(module, loader)
    return trainer


def wait_for_children(trainer) -> None:
    if trainer.global_rank == 0:  # rank 1 is our child process: let it finish before we exit
        for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", []):
            proc.wait(timeout=120)


def tiny_vqvae(clips: str):
    from videogpt.data.dataset import ClipDataset
    from videogpt.vqvae import VQVAEConfig
    T, H, W = ClipDataset(clips, "train")[0][0].shape[1:]
    return VQVAEConfig(input_shape=(T, H, W), n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(2, 4, 4),
                       n_codes=16, embedding_dim=8, n_heads=2)


def run_modules(clips: str, out: Path, steps: int) -> None:
    from videogpt.data.dataset import ClipDataset
    from videogpt.lightning import PriorModule, VQVAEModule
    from videogpt.prior import Prior, PriorConfig
    from videogpt.vqvae import VQVAE
    import videogpt.vqvae as vqvae_mod

    vq_cfg = tiny_vqvae(clips)

    def vqvae_run(name):
        torch.manual_seed(0)  # the stage seeds before building the model: same init on every rank
        module = VQVAEModule(VQVAE(vq_cfg), lr=1e-3, log_every_n_steps=1)
        loader = DataLoader(ClipDataset(clips, "train"), batch_size=BATCH, shuffle=True, drop_last=True)
        # torch's SyncBatchNorm is CUDA-only ("SyncBatchNorm layers only work with GPU modules")
        return fit(name, module, loader, out, steps, sync_batchnorm=False)  # CPU ranks: CUDA-only SyncBatchNorm off

    trainer = vqvae_run("vqvae")

    torch.manual_seed(0)
    p_cfg = PriorConfig(latent_shape=vq_cfg.latent_shape, n_codes=vq_cfg.n_codes, embedding_dim=vq_cfg.embedding_dim,
                        n_layer=2, n_head=2, n_embd=24, dropout=0.1, attn_dropout=0.1)
    prior = Prior(p_cfg, torch.randn(p_cfg.n_codes, p_cfg.embedding_dim))
    module = PriorModule(prior, lr=1e-3, weight_decay=0.01, warmup_steps=0, max_steps=steps, log_every_n_steps=1)
    loader = DataLoader(RandomTokens(32, p_cfg.latent_shape, p_cfg.n_codes), batch_size=BATCH, shuffle=True,
                        drop_last=True)
    trainer = fit("prior", module, loader, out, steps)
    from videogpt.metrics.reports import bits_per_dim
    bits = bits_per_dim(prior, DataLoader(RandomTokens(32, p_cfg.latent_shape, p_cfg.n_codes), batch_size=BATCH))
    (out / f"bits_rank{trainer.global_rank}.json").write_text(json.dumps(bits))

    vqvae_mod._ddp = lambda: False  # control: the codebook no longer all-reduces / broadcasts
    vqvae_run("vqvae_nosync")
    wait_for_children(trainer)


def run_stage(clips: str, out: Path, steps: int) -> None:
    """The train_vqvae stage itself under CPU DDP."""
    import videogpt.training as training
    from videogpt.config import parse

    cfg = tiny_vqvae(clips)
    T, H, _ = cfg.input_shape
    params = parse({
        "data": {"resolution": H, "sequence_length": T},
        "vqvae": {"n_hiddens": cfg.n_hiddens, "res_hiddens": cfg.res_hiddens, "n_res_layers": cfg.n_res_layers,
                  "downsample": list(cfg.downsample), "n_codes": cfg.n_codes, "embedding_dim": cfg.embedding_dim,
                  "n_heads": cfg.n_heads, "max_steps": steps, "batch_size": BATCH, "checkpoint_every": 10_000,
                  "val_every": 10_000},
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "log_every_n_steps": 1},
    })
    made = []
    real_make_trainer = training.make_trainer

    def make_trainer(*args, **kwargs):
        trainer = real_make_trainer(*args, **kwargs)
        trainer.callbacks.append(SaveState("stage_vqvae", out))
        made.append(trainer)
        return trainer

    training.make_trainer = make_trainer
    import videogpt.metrics.reports as reports
    real_my_batches = reports.my_batches

    def my_batches(loader):  # records which test batches this rank's share of the report computes
        seen = []
        for i, batch in real_my_batches(loader):
            seen.append(i)
            yield i, batch
        (out / f"report_batches_rank{torch.distributed.get_rank()}.json").write_text(json.dumps(seen))

    reports.my_batches = my_batches
    manifest = out / "manifest.csv"
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text("clip\n")
    training.train_vqvae(params, clips_path=clips, manifest_path=manifest, model_dir=out / "model",
                         ckpt_dir=out / "ckpt", live_dir=out / "live", metrics_path=out / "metrics.json",
                         picture_path=out / "recon.png")
    wait_for_children(made[0])


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, clips, out, steps = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    {"modules": run_modules, "stage": run_stage}[mode](clips, out, steps)
