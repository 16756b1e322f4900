"""A sample-quality score that needs no download: a small video classifier trained on the training split of the
run's own labelled clips, and, from it, a classifier Inception Score, a Fréchet distance between its features of
generated and real clips, and the accuracy of a class-conditional prior's samples against their labels.

This generalises the paper's Inception Score ("a classifier trained on the dataset's own classes, applied to
samples", spec §3.5) to any labelled clip store (the default moving digits: 10 classes). The classifier is trained
with a fixed recipe (`classifier.*` params, its own seed, no augmentation) on the clip store alone, so it changes
only when the data or those params change, never with the VQ-VAE or prior params. Its numbers are comparable only
between runs scored by the same classifier file (its sha256 is in every protocol), never with papers.

The network: the frames average-pooled by `input_pool` (so that the score rates shapes rather than pixel detail:
without it, the default data's classifier put every blurry VQ-VAE reconstruction in one class), then `n_blocks`
blocks of [3x3x3 conv, batch norm, ReLU, 2x max pool on every axis still longer than 1], widths width, 2 width,
4 width, ...; global average pooling gives the feature vector (B, D) used for the Fréchet distance (the
penultimate layer, as Inception's pool features for FID); one linear layer gives the logits.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videogpt.distributed import to_device
from videogpt.fileio import atomic_dir, file_sha256, write_json
from videogpt.metrics.c3d import inception_score
from videogpt.saved import CONFIG, WEIGHTS, load_model_files, write_model_files
from videogpt.video import to_float

NO_LABELS_FILE = "no_labels.json"  # written instead of weights when the training split has < 2 classes


@dataclass(frozen=True)
class ClassifierConfig:
    n_classes: int
    input_shape: tuple[int, int, int]   # (T, H, W) of the clips it was trained on
    width: int = 16
    n_blocks: int = 3
    input_pool: int = 2                 # spatial average pool of the input (1 = none)

    def __post_init__(self):
        if self.n_classes < 2:
            raise ValueError(f"classifier: n_classes={self.n_classes}; a classifier needs at least 2 classes")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))

    def pools(self) -> list[tuple[int, int, int]]:
        """The average-pool kernel after each block: 2 on every axis still longer than 1."""
        t, h, w = self.input_shape
        size, out = [t, h // self.input_pool, w // self.input_pool], []
        for _ in range(self.n_blocks):
            k = tuple(2 if s >= 2 else 1 for s in size)
            size = [s // k_ for s, k_ in zip(size, k)]
            out.append(k)
        return out

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.n_blocks - 1)


class VideoClassifier(nn.Module):
    """(B, 3, T, H, W) float in [-0.5, 0.5] (videogpt.video.to_float) -> logits (B, n_classes)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        widths = [3] + [config.width * 2 ** i for i in range(config.n_blocks)]
        self.convs = nn.ModuleList(nn.Conv3d(a, b, 3, padding=1, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm3d(b) for b in widths[1:])
        self.pools = config.pools()
        self.head = nn.Linear(widths[-1], config.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> the penultimate features (B, feature_dim): the conv trunk, averaged over space-time."""
        if tuple(x.shape[2:]) != self.config.input_shape:
            raise ValueError(f"the classifier was trained on clips of (T, H, W) {self.config.input_shape}, "
                             f"got {tuple(x.shape[2:])}")
        p = self.config.input_pool
        x = F.avg_pool3d(x, (1, p, p)) if p > 1 else x
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            x = F.max_pool3d(F.relu(norm(conv(x))), pool)
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Training (the train_classifier stage)


@dataclass(frozen=True)
class LabelledClips:
    """One split of labelled clips, read on demand: labels (N,) int (-1 = unlabelled); read(indices (n,) sorted)
    -> uint8 clips (n, T, H, W, 3). The stage reads them from the clip store; this module stays free of it."""
    labels: np.ndarray
    read: Callable[[np.ndarray], np.ndarray]

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.labels) >= 0)


def no_labels_reason(train: LabelledClips) -> str | None:
    """Why no classifier can be trained on the training split (fewer than 2 labelled classes), or None."""
    labels = np.asarray(train.labels)
    classes = np.unique(labels[labels >= 0])
    if len(classes) >= 2:
        return None
    return (f"no labels: the training split has {len(train.labelled)} labelled clips in {len(classes)} class(es); "
            "the classifier score needs at least 2 classes (label the videos, e.g. by class folders)")


def accuracy(model: VideoClassifier, clips: LabelledClips, batch_size: int, device) -> float | None:
    """Top-1 accuracy on the labelled clips of a split (None if it has none)."""
    idx = clips.labelled
    if len(idx) == 0:
        return None
    probs = np.concatenate([classify(model, clips.read(idx[a:a + batch_size]), batch_size, device)[0]
                            for a in range(0, len(idx), batch_size)])
    return label_accuracy(probs, np.asarray(clips.labels)[idx])


def train_classifier(cp, train: LabelledClips, *, out_dir, test: LabelledClips | None = None, class_names=(),
                     device="cpu") -> dict:
    """Stage train_classifier: the classifier of `cp` (videogpt.config.ClassifierParams) trained on the labelled
    clips of `train`, saved to out_dir (model.safetensors + config.json; meta: steps, accuracies, recipe).
    Recipe: Adam(lr) at a constant rate, cross-entropy, max_steps batches of batch_size clips taken from seeded
    permutations (epoch after epoch), no augmentation. Fewer than 2 classes: out_dir holds only no_labels.json
    with the reason. Returns the meta (or {"available": False, "reason"})."""
    reason = no_labels_reason(train)
    if reason is not None:
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / NO_LABELS_FILE, {"available": False, "reason": reason})
        return {"available": False, "reason": reason}
    labels, idx = np.asarray(train.labels), train.labelled
    n_classes = int(labels[idx].max()) + 1   # labels index the store's class_names
    input_shape = train.read(idx[:1]).shape[1:4]
    torch.manual_seed(cp.seed)
    config = ClassifierConfig(n_classes=n_classes, input_shape=input_shape, width=cp.width, n_blocks=cp.n_blocks,
                              input_pool=cp.input_pool)
    model = VideoClassifier(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cp.lr)
    gen = torch.Generator().manual_seed(cp.seed)
    order: list[int] = []
    model.train()
    for _ in range(cp.max_steps):
        while len(order) < cp.batch_size:  # fresh permutations until the batch can be filled
            order += torch.randperm(len(idx), generator=gen).tolist()
        batch, order = np.sort(idx[order[:cp.batch_size]]), order[cp.batch_size:]  # sorted: fast store reads
        x = to_float(to_device(torch.as_tensor(train.read(batch)), device))
        loss = F.cross_entropy(model(x), torch.as_tensor(labels[batch], dtype=torch.long, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    meta = {"steps": cp.max_steps, "final_loss": float(loss.detach()),
            "train_accuracy": accuracy(model, train, cp.batch_size, device),
            "test_accuracy": None if test is None else accuracy(model, test, cp.batch_size, device),
            "class_names": list(class_names), "n_train_clips": int(len(idx)),
            "recipe": {"params": asdict(cp), "optimizer": "Adam, constant lr", "loss": "cross-entropy",
                       "augmentation": "none", "data": "the labelled clips of the training split"}}
    with atomic_dir(out_dir) as tmp:
        write_model_files(tmp, model.cpu(), config, meta)
    return {"available": True, **meta}


# --------------------------------------------------------------------------------------------
# Loading and scoring (the evaluate stage)


@dataclass
class LoadedClassifier:
    """A trained classifier in eval mode, or none (model None) with the reason; sha256 = its weights file's."""
    model: VideoClassifier | None
    reason: str | None
    sha256: str | None
    meta: dict


def load_classifier(directory) -> LoadedClassifier:
    """The train_classifier stage's output: weights through safetensors (nothing is unpickled), or the reason
    there are none (no_labels.json, or no folder)."""
    directory = Path(directory)
    marker = directory / NO_LABELS_FILE
    if marker.is_file():
        return LoadedClassifier(None, json.loads(marker.read_text())["reason"], None, {})
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        return LoadedClassifier(None, f"no classifier: {directory} holds no {WEIGHTS}; run the train_classifier "
                                      "stage (dvc repro)", None, {})
    cfg, state, meta = load_model_files(directory)
    model = VideoClassifier(ClassifierConfig(**cfg))
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    return LoadedClassifier(model, None, file_sha256(directory / WEIGHTS), meta)


@torch.inference_mode()
def classify(model: VideoClassifier, videos_uint8, batch_size: int = 16, device="cpu"
             ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 videos (N, T, H, W, 3) -> (p(y|x) (N, K), features (N, D)), float64."""
    probs, feats = [], []
    for start in range(0, len(videos_uint8), batch_size):
        batch = torch.as_tensor(np.asarray(videos_uint8[start:start + batch_size]))
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, T, H, W, 3) videos, got {batch.dtype} {tuple(batch.shape)}")
        f = model.features(to_float(to_device(batch, device)))  # uint8 travels, converted there
        probs.append(torch.softmax(model.head(f).double(), dim=1).cpu().numpy())
        feats.append(f.double().cpu().numpy())
    k, d = model.config.n_classes, model.config.feature_dim
    return (np.concatenate(probs) if probs else np.zeros((0, k)), np.concatenate(feats) if feats else np.zeros((0, d)))


def label_accuracy(probs: np.ndarray, labels) -> float:
    """Fraction of videos whose most likely class is their label."""
    labels = np.asarray(labels)
    if probs.shape[0] != labels.shape[0] or len(labels) == 0:
        raise ValueError(f"{probs.shape[0]} predictions for {labels.shape[0]} labels")
    return float((np.asarray(probs).argmax(1) == labels).mean())


__all__ = ["ClassifierConfig", "VideoClassifier", "train_classifier", "load_classifier", "LoadedClassifier",
           "classify", "inception_score", "label_accuracy", "no_labels_reason", "accuracy", "LabelledClips",
           "NO_LABELS_FILE"]
