"""FVD trials: which real test clips each trial compares against, and the mean ± std over trials.

The real set of a trial is a seeded uniform random sample, without replacement, of the whole test split
(the reference protocol draws a random batch of the test split). Taking "the first n clips" instead is
biased: stores are sorted by path, so on a class-sorted dataset such as UCF-101 the first 256 clips come
from about one class. Trial t's subset depends only on (seed, t, n_test, n_real), so adding trials keeps
the earlier trials' subsets (and their cached statistics) unchanged. Within a subset the indices are
sorted: the set is what matters for the statistics, and sorted reads are the fast ones on a chunked store.
"""
from __future__ import annotations

import math

import numpy as np


def real_subset(n_test: int, n_real: int, seed: int, trial: int = 0) -> np.ndarray:
    """Sorted indices (n_real,) int64 of trial `trial`'s real clips, drawn without replacement from
    range(n_test) by a generator seeded with (seed, trial)."""
    if not 1 <= n_real <= n_test:
        raise ValueError(f"n_real={n_real} must be between 1 and the {n_test} clips of the test split")
    if seed < 0 or trial < 0:
        raise ValueError(f"seed ({seed}) and trial ({trial}) must be >= 0")
    rng = np.random.default_rng([seed, trial])
    return np.sort(rng.choice(n_test, size=n_real, replace=False)).astype(np.int64)


def real_subsets(n_test: int, n_real: int, n_trials: int, seed: int) -> list[np.ndarray]:
    """`real_subset` of every trial 0 .. n_trials-1."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials} must be >= 1")
    return [real_subset(n_test, n_real, seed, t) for t in range(n_trials)]


def trial_summary(values) -> dict:
    """{"trials": [...], "mean", "std", "n_trials"}; std is the population std (np.std, ddof=0), as the
    ± figures of the paper's code. A None value (metric unavailable) makes mean and std None."""
    values = [None if v is None else float(v) for v in values]
    if not values:
        raise ValueError("trial_summary: no trials")
    if any(v is None for v in values):
        return {"trials": values, "mean": None, "std": None, "n_trials": len(values)}
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"trial_summary: non-finite trial values {values}")
    arr = np.asarray(values, np.float64)
    return {"trials": values, "mean": float(arr.mean()), "std": float(arr.std()), "n_trials": len(values)}


__all__ = ["real_subset", "real_subsets", "trial_summary"]
