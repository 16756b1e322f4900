"""3D ResNet that encodes the conditioning frames of the frame-conditional prior.

Shape of the network (the conditioning encoder of the VideoGPT code): a "CIFAR" stem (one 3x3x3 conv, no max-pool, because the
inputs are small), four groups of basic blocks ([2,2,2,2] for depth 18, [3,4,6,3] for 34) with
widths w, 2w, 4w, out_dim, spatial stride 2 in groups 2 and 3 (total spatial downsampling 4) and
no temporal downsampling (the conditioning clip is often a single frame). Normalisation is a
LayerNorm over the channel axis instead of BatchNorm, so the encoder behaves the same in train and
eval mode and does not depend on the batch composition. It trains jointly with the transformer.

Deliberate difference from the reference code: the basic block is the standard one
(conv-LN-ReLU-conv-LN, add shortcut, ReLU). The reference applies an extra ReLU *before* the
residual addition, which makes every residual branch non-negative; there is no checkpoint to stay
compatible with, so we keep the textbook block.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
DOWNSAMPLE = 4  # total spatial downsampling of the network (time is never downsampled)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over C of a (B, C, T, H, W) tensor, with statistics in float32 (stable under AMP)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.movedim(1, -1)
        y = F.layer_norm(y.float(), self.norm.normalized_shape, self.norm.weight.float(), self.norm.bias.float(),
                         self.norm.eps)
        return y.to(x.dtype).movedim(-1, 1)


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    # Stride only over space: (1, s, s). Bias is redundant in front of a LayerNorm.
    return nn.Conv3d(cin, cout, kernel_size=3, stride=(1, stride, stride), padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.norm1 = conv3(cin, cout, stride), ChannelLayerNorm(cout)
        self.conv2, self.norm2 = conv3(cout, cout), ChannelLayerNorm(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:  # projection shortcut when the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, kernel_size=1, stride=(1, stride, stride), bias=False), ChannelLayerNorm(cout))

    def forward(self, x):
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet3d(nn.Module):
    """(B, 3, T, H, W) frames in [-0.5, 0.5] -> (B, T, H/4, W/4, out_dim) channels-last features."""

    def __init__(self, depth: int = 34, out_dim: int = 240, width: int = 64):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"prior.resnet_depth: {depth} is not supported; expected one of {sorted(LAYERS)}")
        self.depth, self.out_dim, self.width = depth, out_dim, width
        self.stem = nn.Sequential(nn.Conv3d(3, width, kernel_size=3, padding=1, bias=False),
                                  ChannelLayerNorm(width), nn.ReLU())
        widths = (width, 2 * width, 4 * width, out_dim)
        strides = (1, 2, 2, 1)
        groups, cin = [], width
        for n_blocks, cout, stride in zip(LAYERS[depth], widths, strides):
            blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(n_blocks - 1)]
            groups.append(nn.Sequential(*blocks))
            cin = cout
        self.groups = nn.Sequential(*groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, T, H, W); got {tuple(x.shape)}")
        if x.shape[-2] % DOWNSAMPLE or x.shape[-1] % DOWNSAMPLE:
            raise ValueError(f"frame height/width {tuple(x.shape[-2:])} must be divisible by {DOWNSAMPLE}")
        return self.groups(self.stem(x)).movedim(1, -1)

    def flops(self, n_frames: int, height: int, width: int) -> int:
        """Forward matmul FLOPs (2 per multiply-add) of the convolutions for one input clip."""
        total, t, h, w = 0, n_frames, height, width
        total += 2 * t * h * w * 3 * self.width * 27
        for group in self.groups:
            for block in group:
                cin, cout = block.conv1.in_channels, block.conv1.out_channels
                s = block.conv1.stride[1]
                h, w = (h + s - 1) // s, (w + s - 1) // s
                total += 2 * t * h * w * (cin * cout * 27 + cout * cout * 27)
                if block.shortcut is not None:
                    total += 2 * t * h * w * cin * cout
        return total
