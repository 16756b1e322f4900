"""Shared start-up of every stage script: validated params, and one clear line on expected failures."""
import errno
import os
import sys

# OpenMP threads that spin while waiting collapse throughput (3-100x, bench/run_all.py) when another
# process holds a core; passive waiting costs nothing measurable. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from videogpt.config import Params, ParamsError, load

# Failures of the machine rather than the code: report them in one line, not a traceback.
_IO_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted", errno.EFBIG: "the file is too large for this file system"}


def start() -> Params:
    """Validate params.yaml before any work; a bad key exits with one clear line."""
    try:
        return load("params.yaml")
    except ParamsError as err:
        sys.exit(f"params.yaml: {err}")


def run(stage: str, main) -> None:
    """Run a stage's main(); bad params and write errors (disk full, read-only folder) exit non-zero with
    one clear line. Every stage writes its outs to temporary paths and renames them at the end, so after
    such a failure no out looks complete."""
    try:
        main()
    except ParamsError as err:  # a value that only the data can contradict (e.g. data.resolution vs the store)
        sys.exit(f"{stage}: {err}")
    except OSError as err:
        if err.errno not in _IO_ERRORS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        sys.exit(f"{stage}: cannot write its outputs: {_IO_ERRORS[err.errno]}{where}. Nothing was left that looks "
                 "complete; free space or fix the folder's permissions and run the stage again.")
