"""Random I3D weights in the published key layout of i3d_pretrained_400.pt, derived from the I3D layer table
independently of the model code: the real weights cannot be downloaded here."""
from __future__ import annotations

from collections import OrderedDict

import torch

UNITS = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
MIXED = [("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]), ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
         ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]), ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
         ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]), ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
         ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]), ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
         ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128])]


def all_units() -> list[tuple[str, int, int, int]]:
    """(key prefix, in channels, out channels, kernel) of every conv+BN unit, in the file's order."""
    units = list(UNITS)
    for name, cin, (c0, c1a, c1b, c2a, c2b, c3b) in MIXED:
        units += [(f"{name}.b0", cin, c0, 1), (f"{name}.b1a", cin, c1a, 1), (f"{name}.b1b", c1a, c1b, 3),
                  (f"{name}.b2a", cin, c2a, 1), (f"{name}.b2b", c2a, c2b, 3), (f"{name}.b3b", cin, c3b, 1)]
    return units


def published_layout_state_dict(seed: int = 0, var_scale: float = 1.0) -> OrderedDict:
    """Random tensors under the keys/shapes of i3d_pretrained_400.pt (bn.weight = 1 as in the TF conversion).

    Running variances are var_scale * U(0.5, 1.5) and the conv weights are scaled by sqrt(var_scale), so
    activations stay O(1) for any var_scale; a small var_scale (e.g. 1e-3) makes the BatchNorm eps matter.
    """
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, cin, cout, k in all_units():
        std = (2.0 / (cin * k**3) * var_scale) ** 0.5
        sd[f"{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=g) * std
        sd[f"{name}.bn.weight"] = torch.ones(cout)
        sd[f"{name}.bn.bias"] = torch.randn(cout, generator=g) * 0.1
        sd[f"{name}.bn.running_mean"] = torch.randn(cout, generator=g) * 0.1 * var_scale ** 0.5
        sd[f"{name}.bn.running_var"] = (torch.rand(cout, generator=g) + 0.5) * var_scale
    sd["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g) * 0.03
    sd["logits.conv3d.bias"] = torch.randn(400, generator=g) * 0.1
    return sd
