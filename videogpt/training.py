"""The two training procedures behind stages/train_vqvae.py and stages/train_prior.py, and model loading.

Each takes the validated Params and the artifact paths, so tests can run them on tiny data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from pipeline.params import Params, ParamsError, to_dict
from videogpt.checkpoint import fingerprint, load_model_files, save_model
from videogpt.data.dataset import ClipDataset
from videogpt.fileio import write_json
from videogpt.lightning import PriorModule, VQVAEModule, finish_resume, make_trainer, prepare_resume
from videogpt.prior import Prior, PriorConfig
from videogpt.tokens import TokenDataset, open_token_store
from videogpt.visualize import contact_sheet, save_png
from videogpt.vqvae import VQVAE, VQVAEConfig


def inference_device(trainer_params) -> torch.device:
    """The device for the non-training stages (tokenize, sample, evaluate): the first GPU if allowed."""
    use_cuda = trainer_params.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def _subset(cls, values: dict, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


def _loader(ds, batch_size, num_workers, shuffle, drop_last=False):
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class UnsafeCheckpointError(RuntimeError):
    pass


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


def check_clip_store(clips_path, params: Params) -> tuple[int, int, int]:
    """The clip store must match data.* params (else the VQ-VAE config would silently disagree)."""
    root = zarr.open_group(str(clips_path), mode="r")
    if "train" not in root:
        raise ValueError(f"{clips_path}: no train split; run the preprocess stage first")
    t, h, w, _ = root["train"]["clips"].shape[1:]
    if (h, w) != (params.data.resolution,) * 2:
        raise ParamsError(f"data.resolution: params say {params.data.resolution} but {clips_path} holds "
                          f"{h}x{w} clips; re-run preprocess (dvc repro)")
    if t != params.data.sequence_length:
        raise ParamsError(f"data.sequence_length: params say {params.data.sequence_length} but {clips_path} "
                          f"holds {t}-frame clips; re-run preprocess (dvc repro)")
    return t, h, w


def vqvae_config(params: Params, input_shape) -> VQVAEConfig:
    return _subset(VQVAEConfig, to_dict(params.vqvae) | {"downsample": params.vqvae.downsample},
                   input_shape=tuple(input_shape))


def load_vqvae(directory) -> VQVAE:
    cfg, state, _ = load_model_files(directory)
    cfg = VQVAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    model = VQVAE(cfg)
    model.load_state_dict(state)
    return model.eval()


def load_prior(directory, vqvae: VQVAE) -> tuple[Prior, dict]:
    cfg, state, meta = load_model_files(directory)
    cfg = PriorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    model = Prior(cfg, vqvae.codebook.embeddings.detach().clone())
    model.load_state_dict(state)
    return model.eval(), meta


@torch.inference_mode()
def reconstruction_report(vqvae: VQVAE, loader, n_codes: int) -> dict:
    """NMSE (MSE/0.06), PSNR on [0,1] pixels, code perplexity and fraction of codes used over a split."""
    vqvae.eval()
    se, n_px, psnrs, counts = 0.0, 0, [], np.zeros(n_codes, np.int64)
    for video, _ in loader:
        codes = vqvae.encode(video)
        recon = vqvae.decode(codes).clamp(-0.5, 0.5)
        se += float(((recon - video) ** 2).sum())
        n_px += video.numel()
        mse = ((recon - video) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs.extend((10 * torch.log10(1.0 / mse)).tolist())
        counts += np.bincount(codes.flatten().numpy(), minlength=n_codes)
    p = counts / counts.sum()
    return {"nmse": se / n_px / 0.06, "psnr": float(np.mean(psnrs)),
            "perplexity": float(np.exp(-(p * np.log(p + 1e-10)).sum())),
            "codes_used": float((counts > 0).mean()), "n_clips": len(psnrs)}


@torch.inference_mode()
def save_reconstruction_picture(vqvae: VQVAE, dataset, path, n: int = 6) -> None:
    """Real (odd rows) above reconstruction (even rows) for n clips spread evenly over the split."""
    rows = []
    for i in np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int):
        video = dataset[int(i)][0][None]
        rows += [to_uint8(video[0]), to_uint8(vqvae.decode(vqvae.encode(video))[0])]
    save_png(path, contact_sheet(rows), upscale=2)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3,T,H,W) in [-0.5,0.5] -> (T,H,W,3) uint8, rounding (not truncating)."""
    return ((video.clamp(-0.5, 0.5) + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def train_vqvae(params: Params, *, clips_path, manifest_path, model_dir, ckpt_dir, live_dir, metrics_path,
                picture_path) -> dict:
    input_shape = check_clip_store(clips_path, params)
    cfg = vqvae_config(params, input_shape)
    vp, tp = params.vqvae, params.trainer
    train_ds = ClipDataset(clips_path, "train", hflip=params.data.hflip)
    if len(train_ds) < vp.batch_size:
        raise ParamsError(f"vqvae.batch_size: {vp.batch_size} exceeds the {len(train_ds)} training clips")
    val_ds = ClipDataset(clips_path, "test")
    train_dl = _loader(train_ds, vp.batch_size, vp.num_workers, shuffle=True, drop_last=True)
    val_dl = _loader(val_ds, vp.batch_size, vp.num_workers, shuffle=False)

    run_key = {"params": {"seed": params.seed, "vqvae": to_dict(vp), "data": to_dict(params.data),
                          "trainer": to_dict(tp)},
               "clips": hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()}
    resume_from = prepare_resume(ckpt_dir, run_key)
    torch.manual_seed(params.seed)
    model = VQVAE(cfg)
    module = VQVAEModule(model, lr=vp.lr, log_every_n_steps=tp.log_every_n_steps, compile=tp.compile)
    # BatchNorm statistics are synchronised across GPUs under DDP (as the paper's code does); torch's
    # SyncBatchNorm has no CPU implementation, so CPU ranks keep their own running statistics.
    trainer = make_trainer(tp, name="train_vqvae", max_steps=vp.max_steps, ckpt_dir=ckpt_dir, live_dir=live_dir,
                           val_every=vp.val_every, checkpoint_every=vp.checkpoint_every, seed=params.seed,
                           sync_batchnorm=tp.devices * tp.num_nodes > 1 and inference_device(tp).type == "cuda")
    fit(trainer, module, train_dl, val_dl, resume_from)
    if not trainer.is_global_zero:
        return {}
    model = model.cpu().eval()
    save_model(model_dir, model, cfg, meta={"steps": trainer.global_step, "run_key": _digest(run_key)})
    report = reconstruction_report(model, _loader(val_ds, vp.batch_size, 0, shuffle=False), cfg.n_codes)
    save_reconstruction_picture(model, val_ds, picture_path)
    report["ema_codes_used"] = float(model.codebook.usage())
    report["steps"] = trainer.global_step
    write_json(metrics_path, report)
    finish_resume(ckpt_dir)
    return report


def prior_config(params: Params, vqvae: VQVAE, n_classes: int, frame_shape) -> PriorConfig:
    return _subset(PriorConfig, to_dict(params.prior), latent_shape=tuple(vqvae.latent_shape()),
                   n_codes=vqvae.config.n_codes, embedding_dim=vqvae.config.embedding_dim,
                   n_classes=n_classes, frame_shape=tuple(frame_shape))


def prior_datasets(params: Params, tokens_path, clips_path, split: str) -> TokenDataset:
    pp = params.prior
    return TokenDataset(tokens_path, split, with_label=pp.condition == "class",
                        n_cond_frames=pp.n_cond_frames if pp.condition == "frames" else 0,
                        clips_path=clips_path)


def unigram_entropy_bits(tokens: np.ndarray, n_codes: int) -> float:
    p = np.bincount(tokens.reshape(-1).astype(np.int64), minlength=n_codes) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


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


@torch.inference_mode()
def bits_per_dim(prior: Prior, loader) -> float:
    prior.eval()
    total, n = 0.0, 0
    for batch in loader:
        loss = prior.loss(batch["tokens"], label=batch.get("label"), frames=batch.get("frames"))
        total += float(loss) * len(batch["tokens"])
        n += len(batch["tokens"])
    return total / max(n, 1) / math.log(2)


def train_prior(params: Params, *, vqvae_dir, tokens_path, clips_path, model_dir, ckpt_dir, live_dir,
                metrics_path) -> dict:
    vqvae = load_vqvae(vqvae_dir)
    fp = fingerprint(vqvae_dir)
    root = open_token_store(tokens_path, expect_fingerprint=fp)
    n_classes = check_class_labels(root, params)
    pp, tp = params.prior, params.trainer
    train_ds = prior_datasets(params, tokens_path, clips_path, "train")
    val_ds = prior_datasets(params, tokens_path, clips_path, "test")
    if len(train_ds) < pp.batch_size:
        raise ParamsError(f"prior.batch_size: {pp.batch_size} exceeds the {len(train_ds)} training token grids")
    frame_shape = (params.data.resolution, params.data.resolution)
    cfg = prior_config(params, vqvae, n_classes, frame_shape)

    run_key = {"params": {"seed": params.seed, "prior": to_dict(pp), "trainer": to_dict(tp)}, "vqvae": fp}
    resume_from = prepare_resume(ckpt_dir, run_key)
    torch.manual_seed(params.seed)
    model = Prior(cfg, vqvae.codebook.embeddings.detach().clone())
    module = PriorModule(model, lr=pp.lr, weight_decay=pp.weight_decay, warmup_steps=pp.warmup_steps,
                         max_steps=pp.max_steps, log_every_n_steps=tp.log_every_n_steps, compile=tp.compile)
    trainer = make_trainer(tp, name="train_prior", max_steps=pp.max_steps, ckpt_dir=ckpt_dir, live_dir=live_dir,
                           val_every=pp.val_every, checkpoint_every=pp.checkpoint_every, seed=params.seed)
    fit(trainer, module, _loader(train_ds, pp.batch_size, pp.num_workers, shuffle=True, drop_last=True),
        _loader(val_ds, pp.batch_size, pp.num_workers, shuffle=False), resume_from)
    if not trainer.is_global_zero:
        return {}
    model = model.cpu().eval()
    save_model(model_dir, model, cfg, meta={"steps": trainer.global_step, "vqvae_fingerprint": fp,
                                            "class_names": list(root.attrs.get("class_names", []))})
    report = {
        "val_bits_per_dim": bits_per_dim(model, _loader(val_ds, pp.batch_size, 0, shuffle=False)),
        "train_unigram_entropy_bits": unigram_entropy_bits(train_ds.tokens, cfg.n_codes),
        "n_params": sum(p.numel() for p in model.parameters()),
        "steps": trainer.global_step,
    }
    write_json(metrics_path, report)
    finish_resume(ckpt_dir)
    return report

