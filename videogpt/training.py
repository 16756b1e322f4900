"""The two training procedures behind stages/train_vqvae.py and stages/train_prior.py.

Each takes the validated Params and the artifact paths, so tests can run them on tiny data.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from videogpt.checkpoint import load_vqvae
from videogpt.config import DataParams, Params, ParamsError, PriorParams, TrainerParams, VQVAEParams, to_dict
from videogpt.data.clip_store import check_clip_shape, read_actions
from videogpt import storage
from videogpt.data.dataset import ClipDataset, ClipShards
from videogpt.data.streaming import ShardStream, fewest_items
from videogpt.distributed import inference_device, launch_env
from videogpt.fileio import write_json
from videogpt.lightning import PriorModule, VQVAEModule, finish_resume, make_trainer, prepare_resume
from videogpt.prior import ACTION_CONDITIONS, Prior, PriorConfig
from videogpt.reports import (bits_per_dim, bits_protocol, recon_protocol, reconstruction_report,
                              save_reconstruction_picture, unigram_entropy_bits)
from videogpt.saved import fingerprint, save_model
from videogpt.tokens import open_token_store, prior_dataset
from videogpt.vqvae import VQVAE, VQVAEConfig, count_parameters


def _loader(ds, batch_size, num_workers, shuffle, drop_last=False):
    shuffle = shuffle and not isinstance(ds, ShardStream)  # a stream shuffles itself
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def streams(tp: TrainerParams, *stores) -> bool:
    """Whether the training loaders stream whole shards (videogpt.data.streaming) instead of indexing the store
    clip by clip: across processes (each rank would otherwise hold, or index, the whole split) and from object
    storage (a URL, or a pointer file leading to one under storage.root; one request per clip otherwise). A
    one-process run on local stores keeps the map-style loaders and so its batches."""
    return tp.devices * tp.num_nodes > 1 or any(storage.is_url(storage.resolve(store)) for store in stores)


def _check_size(ds, tp: TrainerParams, batch_size: int, num_workers: int, key: str, what: str) -> None:
    """Enough items for one batch: of the split, and for a stream of every reader's share (ranks x workers),
    since a reader with less than a batch would leave every epoch without a step."""
    if isinstance(ds, ShardStream):
        readers = tp.devices * tp.num_nodes * max(1, num_workers)
        share = fewest_items(ds.n, ds.shard, readers)
        if share < batch_size:
            raise ParamsError(f"{key}: {batch_size} exceeds the {share} {what} that each of the {readers} readers "
                              "(trainer.devices x trainer.num_nodes x DataLoader workers) may get in an epoch")
    elif len(ds) < batch_size:
        raise ParamsError(f"{key}: {batch_size} exceeds the {len(ds)} {what}")


def check_launch(tp: TrainerParams) -> None:
    """Under srun or torchrun, the processes the launcher started must be those the Trainer expects
    (trainer.devices per node x trainer.num_nodes); otherwise Lightning either starts processes of its own beside
    them (duplicate work racing on the same files) or waits forever for ranks that never come. Checked before any
    data is read. A process started by Lightning's own launcher carries its WORLD_SIZE, which matches."""
    world = launch_env()[1]
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]  # srun writes e.g. "2(x3)"
    if world > 1 and (world != tp.devices * tp.num_nodes or (per_node.isdigit() and int(per_node) != tp.devices)):
        raise ParamsError(
            f"trainer.devices, trainer.num_nodes: {tp.devices} device(s) x {tp.num_nodes} node(s), but the launcher "
            f"started {world} processes (SLURM_NTASKS or WORLD_SIZE; SLURM_NTASKS_PER_NODE="
            f"{os.environ.get('SLURM_NTASKS_PER_NODE', 'unset')}): set trainer.devices to the tasks per node "
            "(srun --ntasks-per-node, torchrun --nproc-per-node) and trainer.num_nodes to the nodes")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# Keys added after runs were first keyed: a run key lists them only when they differ from their defaults, so a run
# at the defaults keeps its key (its checkpoints still resume, the VQ-VAE's config.json keeps its bytes). A training's
# own seed enters the key resolved, as "seed", whatever its section says.
LATER_KEYS = {TrainerParams: ("accumulate_grad_batches", "checkpoint_activations", "deterministic"),
              VQVAEParams: ("seed", "n_codebooks"), PriorParams: ("seed",), DataParams: ("label_key", "split_key")}


def run_key_section(section) -> dict:
    """A params section as a run key holds it: the later keys (LATER_KEYS) only off their defaults."""
    later, default = LATER_KEYS.get(type(section), ()), type(section)()
    return {k: v for k, v in to_dict(section).items() if k not in later or v != getattr(default, k)}


class UnsafeCheckpointError(RuntimeError):
    pass


def same_buffers_as_rank0(model: torch.nn.Module) -> None:
    """Every rank's buffers := rank 0's (the saved model's). Without SyncBatchNorm (CPU DDP) each rank's last step
    updated its BatchNorm statistics from its own batch, and the ranks' shares of a report must use one model."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for b in model.buffers():
            torch.distributed.broadcast(b, 0)


def fit(trainer, module, train_dl, val_dl, resume_from) -> None:
    """trainer.fit, resuming from `resume_from` if given; checkpoints load with weights_only=True."""
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=resume_from, weights_only=True)
    except pickle.UnpicklingError as err:
        if resume_from is None:
            raise
        raise UnsafeCheckpointError(
            f"{resume_from}: refused to load this checkpoint: it holds objects other than tensors and plain "
            "data, and unpickling them could run code. Delete it to start the training afresh.") from err


def train_vqvae(params: Params, *, clips_path, manifest_path, model_dir, ckpt_dir, live_dir, metrics_path,
                picture_path) -> dict:
    check_launch(params.trainer)
    input_shape = check_clip_shape(clips_path, params.data.resolution, params.data.sequence_length)
    cfg = VQVAEConfig.from_params(params.vqvae, input_shape)
    vp, tp = params.vqvae, params.trainer
    # Training and validation batches travel as uint8 and become float on the device (VQVAEModule)
    seed = params.training_seed("vqvae")
    if streams(tp, clips_path):
        train_ds = ClipShards(clips_path, "train", seed=seed, hflip=params.data.hflip, uint8=True)
    else:
        train_ds = ClipDataset(clips_path, "train", hflip=params.data.hflip, uint8=True)
    _check_size(train_ds, tp, vp.batch_size, vp.num_workers, "vqvae.batch_size", "training clips")
    val_ds = ClipDataset(clips_path, "test")
    train_dl = _loader(train_ds, vp.batch_size, vp.num_workers, shuffle=True, drop_last=True)
    val_dl = _loader(ClipDataset(clips_path, "test", uint8=True), vp.batch_size, vp.num_workers, shuffle=False)

    run_key = {"params": {"seed": seed, "vqvae": run_key_section(vp), "data": run_key_section(params.data),
                          "trainer": run_key_section(tp)},
               "clips": hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()}
    resume_from = prepare_resume(ckpt_dir, run_key)
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    model.set_activation_checkpointing(tp.checkpoint_activations)
    module = VQVAEModule(model, lr=vp.lr, log_every_n_steps=tp.log_every_n_steps, compile=tp.compile)
    # BatchNorm statistics are synchronised across GPUs under DDP (as the paper's code does); torch's
    # SyncBatchNorm has no CPU implementation, so CPU ranks keep their own running statistics.
    trainer = make_trainer(tp, name="train_vqvae", max_steps=vp.max_steps, ckpt_dir=ckpt_dir, live_dir=live_dir,
                           val_every=vp.val_every, checkpoint_every=vp.checkpoint_every, seed=seed,
                           sync_batchnorm=tp.devices * tp.num_nodes > 1 and inference_device(tp).type == "cuda")
    fit(trainer, module, train_dl, val_dl, resume_from)
    # Lightning hands the model back on the CPU; the report runs on the run's device, shared by its ranks
    model = model.to(trainer.strategy.root_device).eval()
    same_buffers_as_rank0(model)
    if trainer.is_global_zero:
        save_model(model_dir, model, cfg, meta={"steps": trainer.global_step, "run_key": _digest(run_key)})
    report = reconstruction_report(model, _loader(val_ds, vp.batch_size, vp.num_workers, shuffle=False), cfg.n_codes)
    if not trainer.is_global_zero:
        return {}
    save_reconstruction_picture(model, val_ds, picture_path)
    report["ema_codes_used"] = float(model.codes_used())
    report["steps"] = trainer.global_step
    report["n_params"] = count_parameters(model)  # a table about the VQ-VAE needs only this stage's metrics
    report["protocol"] = recon_protocol(report["n_clips"])
    write_json(metrics_path, report)
    finish_resume(ckpt_dir)
    return report


def class_count(tokens_root) -> int:
    return len(tokens_root.attrs.get("class_names", []))


def check_class_labels(tokens_root, params: Params) -> int:
    if params.prior.condition != "class":
        return 0
    n_classes = class_count(tokens_root)
    labels = np.asarray(tokens_root["train"]["labels"][:])
    if n_classes < 2 or (labels < 0).any():
        raise ParamsError("prior.condition: 'class' needs a dataset with class labels (class sub-folders with "
                          f"at least 2 classes); this one has {n_classes} classes")
    return n_classes


def action_statistics(clips_path, params: Params) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """For an action-conditional prior: (action_shape (frames per clip, values per action), per-value mean,
    per-value std) of the training clips' actions, the normalisation stored with the model. None for other
    priors. ParamsError naming prior.condition when a split lacks actions or they do not fit its clips."""
    condition = params.prior.condition
    if condition not in ACTION_CONDITIONS:
        return None
    try:
        train = read_actions(clips_path, "train")
        read_actions(clips_path, "test")  # evaluation and sampling take actions from the test clips
    except ValueError as err:
        raise ParamsError(f"prior.condition: '{condition}' needs actions for every clip: {err}") from None
    flat = train.reshape(-1, train.shape[-1]).astype(np.float64)
    return tuple(train.shape[1:]), flat.mean(0), flat.std(0)


def train_prior(params: Params, *, vqvae_dir, tokens_path, clips_path, model_dir, ckpt_dir, live_dir,
                metrics_path) -> dict:
    check_launch(params.trainer)
    vqvae = load_vqvae(vqvae_dir)
    fp = fingerprint(vqvae_dir)
    root = open_token_store(tokens_path, expect_fingerprint=fp)
    n_classes = check_class_labels(root, params)
    actions = action_statistics(clips_path, params)
    pp, tp = params.prior, params.trainer
    seed = params.training_seed("prior")
    train_ds = prior_dataset(pp, tokens_path, clips_path, "train",
                             stream_seed=seed if streams(tp, tokens_path, clips_path) else None)
    val_ds = prior_dataset(pp, tokens_path, clips_path, "test")
    _check_size(train_ds, tp, pp.batch_size, pp.num_workers, "prior.batch_size", "training token grids")
    frame_shape = (params.data.resolution, params.data.resolution)
    cfg = PriorConfig.from_params(pp, vqvae.config, n_classes=n_classes, frame_shape=frame_shape,
                                  action_shape=actions[0] if actions else None)

    run_key = {"params": {"seed": seed, "prior": run_key_section(pp), "trainer": run_key_section(tp)}, "vqvae": fp}
    resume_from = prepare_resume(ckpt_dir, run_key)
    torch.manual_seed(seed)
    model = Prior(cfg, vqvae.code_table().detach().clone())
    if actions:
        model.set_action_stats(*actions[1:])
    model.set_activation_checkpointing(tp.checkpoint_activations)
    module = PriorModule(model, lr=pp.lr, weight_decay=pp.weight_decay, warmup_steps=pp.warmup_steps,
                         max_steps=pp.max_steps, log_every_n_steps=tp.log_every_n_steps, compile=tp.compile)
    trainer = make_trainer(tp, name="train_prior", max_steps=pp.max_steps, ckpt_dir=ckpt_dir, live_dir=live_dir,
                           val_every=pp.val_every, checkpoint_every=pp.checkpoint_every, seed=seed)
    fit(trainer, module, _loader(train_ds, pp.batch_size, pp.num_workers, shuffle=True, drop_last=True),
        _loader(val_ds, pp.batch_size, pp.num_workers, shuffle=False), resume_from)
    model = model.to(trainer.strategy.root_device).eval()  # as in train_vqvae
    if trainer.is_global_zero:
        save_model(model_dir, model, cfg, meta={"steps": trainer.global_step, "vqvae_fingerprint": fp,
                                                "class_names": list(root.attrs.get("class_names", []))})
    val_bits = bits_per_dim(model, _loader(val_ds, pp.batch_size, pp.num_workers, shuffle=False))
    if not trainer.is_global_zero:
        return {}
    report = {
        "val_bits_per_dim": val_bits,
        "train_unigram_entropy_bits": unigram_entropy_bits(train_ds.code_counts(cfg.n_codes)),
        "n_params": model.num_params(),
        "steps": trainer.global_step,
        # VideoGPT has no validation split: "val" is the test split, as in the paper's code
        "protocol": bits_protocol(len(val_ds)) | {"unigram_entropy": "of the train split's codes"},
    }
    write_json(metrics_path, report)
    finish_resume(ckpt_dir)
    return report

