"""tests/gpu/: the CUDA paths, run on a GPU host (`pytest tests/gpu -m gpu`). Every test here carries the
`gpu` marker and is skipped, with the reason, where torch sees no CUDA device; nothing here has a CPU
fallback, so a pass means the GPU path itself ran."""
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # mark before `-m gpu` selects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu/)"))
