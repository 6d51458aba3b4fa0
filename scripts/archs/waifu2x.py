"""waifu2x UpConv7 (nagadomi/waifu2x, MIT): six unpadded 3x3 convs + one 4x4 stride-2 transposed conv.

The ``models-upconv_7_*`` networks of waifu2x (and of waifu2x-ncnn-vulkan, MIT) upscale x2.  Each
3x3 conv has no padding (LeakyReLU 0.1 after each); the final ``ConvTranspose2d(256, 3, 4, stride 2,
padding 3)`` maps an ``n`` px input to ``2n - 4`` px.  waifu2x feeds a copy of the image padded by
:data:`PREPADDING` = 7 px (edge replication, as waifu2x-ncnn-vulkan's pre-processing clamps
coordinates), so the output is exactly twice the input.  RGB in 0..1 in and out.

This is our own implementation; the state-dict keys are ``convs.{0..5}.{weight,bias}`` and
``up.{weight,bias}`` (torch ``ConvTranspose2d`` layout ``[in, out, kh, kw]``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

PREPADDING = 7
WIDTHS = (16, 32, 64, 128, 128, 256)
SLOPE = 0.1
LICENSE_NAME = "MIT (waifu2x by nagadomi; waifu2x-ncnn-vulkan by nihui)"


class UpConv7(nn.Module):
    """waifu2x UpConv7, x2.  ``forward`` takes ``[N, C, H, W]`` in 0..1 and returns ``[N, C, 2H, 2W]``."""

    scale = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3, widths: Sequence[int] = WIDTHS):
        super().__init__()
        chans = [in_channels] + list(widths)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3) for i in range(len(widths)))
        self.up = nn.ConvTranspose2d(chans[-1], out_channels, 4, stride=2, padding=3)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x, (PREPADDING,) * 4, mode="replicate")
        for conv in self.convs:
            y = F.leaky_relu(conv(y), SLOPE)
        return self.up(y)


def config_from_state_dict(sd: Mapping[str, torch.Tensor]):
    """``(in_channels, out_channels, widths)`` read from an UpConv7 state dict."""
    n = 0
    while f"convs.{n}.weight" in sd:
        n += 1
    if n == 0 or "up.weight" not in sd:
        raise KeyError("not a waifu2x UpConv7 state dict (expected convs.0.weight ... and up.weight)")
    widths = [int(sd[f"convs.{i}.weight"].shape[0]) for i in range(n)]
    return int(sd["convs.0.weight"].shape[1]), int(sd["up.weight"].shape[1]), widths
