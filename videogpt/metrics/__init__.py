"""Evaluation metrics (the models' own reports, which run the models, are videogpt.reports): I3D
features (videogpt.metrics.i3d), the named FVD protocols and their I3D flavours (videogpt.metrics.protocol), the
Fréchet distance (videogpt.metrics.frechet), FVD trials (videogpt.metrics.trials), TGANv2's UCF-101 C3D with the
Inception Score (videogpt.metrics.c3d) and the classifier score of the run's own labelled data
(videogpt.metrics.classifier).

The Fréchet and trial parts need only NumPy/SciPy; the I3D and protocol names are imported lazily (they
pull in torch).
"""
from .frechet import (StatsMismatchError, frechet_distance, fvd, gaussian_stats, load_stats, protocol_key,
                      save_stats, stats_n)
from .trials import real_subset, real_subsets, trial_summary

_I3D_NAMES = {"I3D", "I3DWeightsError", "load_i3d", "i3d_features", "expected_state_keys", "N_PUBLISHED_TENSORS"}
_PROTOCOL_NAMES = {"FLAVOURS", "DEFAULT_FLAVOUR", "MIN_FRAMES", "INPUT_SIZE", "preprocess",
                   "generated_to_uint8", "real_to_uint8", "FVDProtocol", "PROTOCOLS", "fvd_protocol"}


def __getattr__(name):
    if name in _I3D_NAMES:
        from . import i3d
        return getattr(i3d, name)
    if name in _PROTOCOL_NAMES:
        from . import protocol
        return getattr(protocol, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["gaussian_stats", "frechet_distance", "fvd", "protocol_key", "save_stats", "load_stats", "stats_n",
           "StatsMismatchError", "real_subset", "real_subsets", "trial_summary", *sorted(_I3D_NAMES),
           *sorted(_PROTOCOL_NAMES)]
