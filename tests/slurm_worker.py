"""Worker for tests/test_slurm.py: one srun task (SLURM_* variables set by the test, no WORLD_SIZE).

    python tests/slurm_worker.py train|tokenize <work dir> <out dir>

`train` runs the train_prior stage's procedure (videogpt.training.train_prior) with trainer.devices=2 on the CPU,
reading the token store through fsspec (tests/counting_fs.py: local files, every read request recorded; the
requests made while training are saved as `train_gets`); `tokenize` runs the tokenize stage's rank set-up and
store build (init_from_env + build_token_store). Each is its own srun (its own processes and rendezvous), as
`srun python -m stages.X` would be. Every file this process opens for writing or renames into place under
<out dir> is recorded by an audit hook in <work dir>/<phase>_rank<SLURM_PROCID>.json, with the ranks this
process was given.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))  # tests/counting_fs.py

import torch  # noqa: E402

WRITES: list[str] = []


def record_writes(out: Path):
    root = str(out.resolve())

    def hook(event, args):
        if event == "open" and args[0] is not None and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            path = os.fsdecode(args[0])
            if writing and os.path.abspath(path).startswith(root):
                WRITES.append(os.path.abspath(path))
        elif event in ("os.rename", "os.replace"):
            dst = os.path.abspath(os.fsdecode(args[1]))
            if dst.startswith(root):
                WRITES.append(dst)

    sys.addaudithook(hook)


def train(work: Path, out: Path) -> dict:
    from videogpt.config import parse
    from videogpt.distributed import launch_env
    import videogpt.training as training

    import counting_fs
    from pytorch_lightning.callbacks import Callback

    class SnapshotGets(Callback):  # the requests of the training epoch, before the report reads the store again
        def on_train_end(self, trainer, pl_module):
            seen["train_gets"] = list(counting_fs.GETS)

    counting_fs.register()
    params = parse({"trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "log_every_n_steps": 1},
                    "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "batch_size": 4, "max_steps": 2,
                              "val_every": 2, "checkpoint_every": 1, "warmup_steps": 0}})
    seen = {"launch_env": launch_env()}
    real_make_trainer = training.make_trainer

    def make_trainer(*args, **kwargs):
        trainer = real_make_trainer(*args, **kwargs)
        trainer.callbacks.append(SnapshotGets())
        seen["trainer"] = trainer
        return trainer

    training.make_trainer = make_trainer
    report = training.train_prior(params, vqvae_dir=work / "vqvae", tokens_path=counting_fs.url(work / "tokens.zarr"),
                                  clips_path=work / "clips.zarr", model_dir=out / "prior", ckpt_dir=out / "ckpt",
                                  live_dir=out / "live", metrics_path=out / "prior.json")
    trainer = seen.pop("trainer")
    seen.update(trainer_rank=trainer.global_rank, trainer_world=trainer.world_size, steps=trainer.global_step,
                environment=type(trainer.strategy.cluster_environment).__name__, reported=bool(report))
    return seen


def tokenize(work: Path, out: Path) -> dict:
    from videogpt.checkpoint import load_vqvae
    from videogpt.distributed import init_from_env, rank_and_world
    from videogpt.saved import fingerprint
    from videogpt.tokens import build_token_store

    init_from_env()
    seen = {"tokenize_rank_world": rank_and_world()}
    build_token_store(load_vqvae(work / "vqvae"), work / "clips.zarr", out / "tokens.zarr",
                      fingerprint=fingerprint(work / "vqvae"), progress=False)
    return seen


def main(phase: str, work: Path, out: Path) -> None:
    torch.set_num_threads(1)
    record_writes(out)
    seen = {"train": train, "tokenize": tokenize}[phase](work, out)
    seen["writes"] = WRITES
    (work / f"{phase}_rank{os.environ['SLURM_PROCID']}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
