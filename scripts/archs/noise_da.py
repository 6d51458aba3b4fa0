"""Noise-DA restoration network (Liao, Yue, Wang, Loy, "Denoising as Adaptation: Noise-Space
Domain Adaptation for Image Restoration", ICLR 2025).

Official code: github.com/KangLiao929/Noise-DA (NTU S-Lab License 1.0, NON-COMMERCIAL; the
released weights carry the same licence).  This is our own implementation of the network the
released checkpoints hold under ``RestorationNet.*``: a plain 4-level U-Net (width 64, 128, 256,
512; two 3x3 convs with LeakyReLU 0.2 per level; 2x2 average-pool down; bilinear 2x up
(``align_corners=True``) followed by a 3x3 conv; skip concatenation; a final 3x3 conv), 8.56 M
parameters.  It predicts a residual: ``output = x + net(x)`` (the official
``restoration_test_head``).  The diffusion model (``denoise_fn.*``) is only used in training.

Images are RGB in 0..1.  Height and width must be multiples of 8 (three 2x poolings); the official
test code pads on the right and bottom by *replication* to a multiple of 8 and crops back.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import nn
from torch.nn import functional as F

#: input height and width must be multiples of this
SIZE_MULTIPLE = 8
#: how the official test code pads to SIZE_MULTIPLE
PAD_MODE = "replicate"
#: the key prefix of the restoration network inside the official training checkpoints
PREFIX = "RestorationNet."

LICENSE_NAME = "NTU S-Lab License 1.0 (non-commercial)"
LICENSE_TEXT = (
    "Noise-DA weights (Liao et al., ICLR 2025) are under the NTU S-Lab License 1.0: NON-COMMERCIAL "
    "use only (github.com/KangLiao929/Noise-DA/blob/main/LICENSE)."
)


class _DoubleConv(nn.Module):
    """Two 3x3 convs, each followed by LeakyReLU(slope); official ``UNetConvBlock``."""

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope),
            nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(slope),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Up(nn.Module):
    """Bilinear 2x (align_corners) -> 3x3 conv -> concat with the skip -> double conv."""

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.conv_up = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_block = _DoubleConv(cin, cout, slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = self.conv_up(x)
        if skip.shape[-2:] != x.shape[-2:]:  # centre crop, as the official block does
            dy = (skip.shape[-2] - x.shape[-2]) // 2
            dx = (skip.shape[-1] - x.shape[-1]) // 2
            skip = skip[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
        return self.conv_block(torch.cat((x, skip), dim=1))


class RestorationNet(nn.Module):
    """Noise-DA's restoration U-Net with the residual head: ``forward(x) = x + unet(x)``.

    ``width`` 64 and ``depth`` 4 are the released sizes (8.56 M parameters); tests use smaller
    ones.  Input ``[B, C, H, W]`` in 0..1 with H, W multiples of ``2**(depth-1)``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, depth: int = 4, width: int = 64,
                 slope: float = 0.2):
        super().__init__()
        self.depth = depth
        self.width = width
        self.in_channels = in_channels
        self.out_channels = out_channels
        chans = [width * 2 ** i for i in range(depth)]
        self.down_path = nn.ModuleList()
        prev = in_channels
        for c in chans:
            self.down_path.append(_DoubleConv(prev, c, slope))
            prev = c
        self.up_path = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.up_path.append(_Up(prev, c, slope))
            prev = c
        self.last = nn.Conv2d(prev, out_channels, 3, padding=1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.depth - 1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net alone (the official ``RestorationNet.forward``)."""
        skips = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i < self.depth - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for up, skip in zip(self.up_path, reversed(skips)):
            x = up(x, skip)
        return self.last(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"Noise-DA needs height and width that are multiples of {m}, got "
                f"{x.shape[-1]}x{x.shape[-2]}")
        return x + self.residual(x)


# --------------------------------------------------------------------------------------------
def prepare_state_dict(obj) -> Dict[str, torch.Tensor]:
    """Official training checkpoint -> the restoration net's own state dict.

    Keeps ``RestorationNet.*`` (prefix removed), drops ``denoise_fn.*`` and noise-schedule
    buffers.  A ``module.`` prefix and an outer ``state_dict``/``params`` wrapper are removed.  A
    checkpoint that is already bare (keys ``down_path.*``) is returned as is.
    """
    sd = obj
    for key in ("state_dict", "params_ema", "params", "model", "net"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping):
        raise ValueError("a Noise-DA checkpoint must be a dict of tensors")
    sd = {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in sd.items()}
    if any(isinstance(k, str) and k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(PREFIX)}
    return {k: v for k, v in sd.items() if isinstance(k, str)}


def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Tuple[int, int, int, int]:
    """``(in_channels, out_channels, depth, width)`` read from a prepared state dict."""
    w0 = sd["down_path.0.block.0.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("down_path."))
    return int(w0.shape[1]), int(sd["last.weight"].shape[0]), depth, int(w0.shape[0])


def build_from_state_dict(obj) -> RestorationNet:
    """Build the RestorationNet a checkpoint describes and load it with ``strict=True`` (eval)."""
    sd = prepare_state_dict(obj)
    cin, cout, depth, width = config_from_state_dict(sd)
    net = RestorationNet(cin, cout, depth, width)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def official_layout(net: RestorationNet, diffusion: Dict[str, torch.Tensor] | None = None) -> dict:
    """``net``'s weights the way the official ``Network.state_dict()`` stores them.

    ``diffusion`` adds stand-in ``denoise_fn.*`` tensors (tests check they are dropped).
    """
    sd = {PREFIX + k: v for k, v in net.state_dict().items()}
    for k, v in (diffusion or {"denoise_fn.init.weight": torch.zeros(4, 9, 3, 3)}).items():
        sd[k if k.startswith("denoise_fn.") else "denoise_fn." + k] = v
    return sd
