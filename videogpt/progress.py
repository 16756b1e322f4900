"""Progress bars that stay readable in logs: live on a terminal, a line every 15 s under DVC/CI."""
import sys

from tqdm import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 15.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
