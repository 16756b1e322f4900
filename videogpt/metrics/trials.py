"""FVD trials: which real clips each trial compares against (the named protocol's real-subset and window
rules), and the mean ± std over trials.

Subset rules (FVDProtocol.real_subset): 'per_trial' draws a seeded uniform random sample, without
replacement, of the whole split for every trial; 'fixed' draws trial 0's sample once and keeps it for every
trial (VideoGPT's loader yields the same first batch each time); 'first_n' takes clips 0..n_real-1 in store
order (StyleGAN-V). A random sample, not "the first n", is what the VideoGPT protocol draws. Taking "the first n clips" instead is
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
        raise ValueError(f"n_real={n_real} must be between 1 and the {n_test} clips of the split")
    if seed < 0 or trial < 0:
        raise ValueError(f"seed ({seed}) and trial ({trial}) must be >= 0")
    rng = np.random.default_rng([seed, trial])
    return np.sort(rng.choice(n_test, size=n_real, replace=False)).astype(np.int64)


SUBSET_RULES = ("per_trial", "fixed", "first_n")


def real_subsets(n_test: int, n_real: int, n_trials: int, seed: int, rule: str = "per_trial") -> list[np.ndarray]:
    """The real subset of every trial 0 .. n_trials-1 under `rule` (see the module doc); 'fixed' repeats
    trial 0's `real_subset`, so its first trial equals 'per_trial's."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials} must be >= 1")
    if rule == "per_trial":
        return [real_subset(n_test, n_real, seed, t) for t in range(n_trials)]
    if rule == "fixed":
        return [real_subset(n_test, n_real, seed, 0)] * n_trials
    if rule == "first_n":
        real_subset(n_test, n_real, seed)  # the same range check
        return [np.arange(n_real, dtype=np.int64)] * n_trials
    raise ValueError(f"unknown real-subset rule {rule!r}; expected one of {', '.join(SUBSET_RULES)}")


def window_offsets(n: int, clip_frames: int, window_frames: int, seed: int, rule: str) -> np.ndarray:
    """First frame (n,) int64 of each real clip's window: 'random' draws uniformly from
    0..clip_frames-window_frames with a generator seeded by `seed` (the same offsets for the same clips,
    every run); 'first' is 0. A clip not longer than the window has offset 0 (its whole length is used)."""
    if rule not in ("random", "first"):
        raise ValueError(f"unknown window rule {rule!r}; expected 'random' or 'first'")
    span = max(clip_frames - window_frames, 0)
    if rule == "first" or span == 0:
        return np.zeros(n, np.int64)
    return np.random.default_rng([seed, 1 << 20]).integers(0, span + 1, size=n).astype(np.int64)


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


__all__ = ["real_subset", "real_subsets", "window_offsets", "trial_summary", "SUBSET_RULES"]
