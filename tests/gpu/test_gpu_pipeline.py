"""One whole tiny `dvc repro` with trainer.accelerator: gpu and bf16-mixed training: every stage runs on the
device and writes finite metrics."""
from __future__ import annotations

import json
import math
import sys

from dvc_repo import TINY, run


def finite_numbers(doc) -> list[float]:
    if isinstance(doc, dict):
        return [x for v in doc.values() for x in finite_numbers(v)]
    if isinstance(doc, list):
        return [x for v in doc for x in finite_numbers(v)]
    return [doc] if isinstance(doc, (int, float)) and not isinstance(doc, bool) else []


def test_tiny_dvc_repro_on_the_gpu(tmp_path, repo_copy):
    params = TINY | {"trainer": TINY["trainer"] | {"accelerator": "gpu", "precision": "bf16-mixed"}}
    env = repo_copy(tmp_path, params)
    run([sys.executable, "-m", "dvc", "repro"], tmp_path, env, timeout=900)
    for name in ("vqvae", "prior", "eval"):
        numbers = finite_numbers(json.loads((tmp_path / "metrics" / f"{name}.json").read_text()))
        assert numbers and all(math.isfinite(x) for x in numbers), name
