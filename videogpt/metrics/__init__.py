"""Evaluation metrics: I3D features (videogpt.metrics.i3d) and the Fréchet distance (videogpt.metrics.frechet).

The Fréchet part needs only NumPy/SciPy; the I3D names are imported lazily (they pull in torch).
"""
from .frechet import (StatsMismatchError, frechet_distance, fvd, gaussian_stats, load_stats, protocol_key,
                      save_stats, stats_n)

_I3D_NAMES = {"I3D", "I3DWeightsError", "preprocess", "load_i3d", "i3d_features", "expected_state_keys",
              "FEATURE_PROTOCOL", "RESIZE", "BN_EPS", "MIN_FRAMES", "INPUT_SIZE", "N_PUBLISHED_TENSORS"}


def __getattr__(name):
    if name in _I3D_NAMES:
        from . import i3d
        return getattr(i3d, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["gaussian_stats", "frechet_distance", "fvd", "protocol_key", "save_stats", "load_stats", "stats_n",
           "StatsMismatchError", *sorted(_I3D_NAMES)]
