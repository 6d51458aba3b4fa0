"""SFHformer: spatial-frequency hybrid restoration network (Jiang et al., ECCV 2024).

Paper: X. Jiang, X. Zhang, N. Gao, Y. Deng, "When Fast Fourier Transform Meets Transformer for
Image Restoration", ECCV 2024.  Official code and weights: github.com/deng-ai-lab/SFHformer (MIT).

This is our own implementation, written so that the *released* checkpoints load with
``strict=True``.  The released weights do not belong to the generic ``models/SFHformer.py`` of
the official repository but to three task files, each with its own ``Backbone_new``.  They come in
two families that differ in block design and parameter names:

``"haze"`` family (dehazing ITS/OTS and GoPro motion deblurring)
    3-level U-Net; stages are named ``layer1, layer2, layer3, layer8, layer9`` and the up-samplers
    ``upsample3, upsample4``.  Blocks: BatchNorm -> mixer (dilated depth-wise local branch plus a
    Fourier-domain global branch, channel attention) scaled by a learned ``beta``, BatchNorm ->
    multi-kernel depth-wise FFN scaled by ``gamma``; zero padding; 2x2 stride-2 down-sampling.
    The dehazing ITS weights were evaluated *without* the BatchNorm in the Fourier unit (the
    official file says to comment it out for ITS), OTS and motion deblur with it: ``fft_bn``.

``"lol"`` family (LOLv2 low-light enhancement, sizes s / m / l)
    Stages ``layer1 .. layer5``, up-samplers ``upsample1, upsample2``; reflect padding; the local
    branch and the FFN are 1x1 -> multi-kernel depth-wise -> 1x1 blocks with GELU; the global
    branch works on 2x the channels; down-sampling is a 3x3 conv plus pixel-unshuffle.

``"generic"`` family (the repository's generic ``models/SFHformer.py`` ``Backbone``, sizes t / s / m / l,
what the official training scripts produce for the other tasks)
    The haze family's blocks, stage names and zero padding, but the global branch of the low-light
    family (1x1 convs on 2x the channels around the Fourier unit) and another Fourier unit:
    BatchNorm, a residual 3x3 depth-wise conv, then ``groups`` 1x1 convs mixed by a softmax
    weighting computed from the spectrum, GELU (``FourierUnit``, ``groups`` 1 as published).

All families predict a residual: ``output = input + net(input)``.  Images are RGB in 0..1.  The
spatial size must be a multiple of 4 (two 2x down-samplings); the official test code crops to a
multiple of 8, so :data:`SIZE_MULTIPLE` is 8 and callers pad and crop back.  The Fourier branch
sees the whole input, so tiles give slightly different results from one pass over the image.

Modules that the official code defines but never calls (``conv_layer``, ``bn2`` and ``norm1`` of
the Fourier unit) are kept so that the checkpoints load strictly; they do not enter the forward.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import torch
from torch import nn
from torch.nn import functional as F

#: input height and width must be multiples of this (two 2x down-samplings, official crop to 8)
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class SFHformerConfig:
    """Size of one SFHformer: family, base width (channels of level 1) and blocks per stage.

    ``depths`` are the block counts of the five stages in forward order: encoder level 1, level 2,
    bottleneck (level 3), decoder level 2, decoder level 1.
    """

    family: str = "haze"
    width: int = 32
    depths: Tuple[int, int, int, int, int] = (4, 6, 10, 6, 4)
    fft_bn: bool = True
    in_channels: int = 3
    out_channels: int = 3
    groups: int = 1  # Fourier-unit groups of the generic family


#: the configurations of the released weights (task variant -> config)
VARIANTS: Dict[str, SFHformerConfig] = {
    "dehaze-indoor": SFHformerConfig("haze", 32, (4, 6, 10, 6, 4), fft_bn=False),   # sfhformer_haze_its.pth
    "dehaze-outdoor": SFHformerConfig("haze", 32, (4, 6, 10, 6, 4), fft_bn=True),   # sfhformer_haze_ots.pth
    "motion-deblur": SFHformerConfig("haze", 64, (6, 6, 12, 6, 6), fft_bn=True),    # GoPro
    "lowlight-s": SFHformerConfig("lol", 24, (1, 1, 2, 1, 1)),                      # sfhformer_11211_lolv2s.pth
    "lowlight-m": SFHformerConfig("lol", 24, (2, 2, 4, 2, 2)),                      # sfhformer_22422_lolv2r.pth
    "lowlight-l": SFHformerConfig("lol", 24, (4, 4, 8, 4, 4)),
    # the generic models/SFHformer.py sizes (SFHformer_t/_s/_m/_l)
    "generic-t": SFHformerConfig("generic", 32, (1, 1, 2, 1, 1)),
    "generic-s": SFHformerConfig("generic", 32, (2, 2, 4, 2, 2)),
    "generic-m": SFHformerConfig("generic", 32, (4, 4, 8, 4, 4)),
    "generic-l": SFHformerConfig("generic", 32, (6, 6, 10, 6, 6)),
}

#: stage / up-sampler attribute names per family (they are the checkpoint's key prefixes)
_STAGE_NAMES = {
    "haze": ("layer1", "layer2", "layer3", "layer8", "layer9"),
    "lol": ("layer1", "layer2", "layer3", "layer4", "layer5"),
    "generic": ("layer1", "layer2", "layer3", "layer8", "layer9"),
}
_UP_NAMES = {"haze": ("upsample3", "upsample4"), "lol": ("upsample1", "upsample2"),
             "generic": ("upsample3", "upsample4")}


# --------------------------------------------------------------------------------------------
# shared pieces
def _dw(channels: int, k: int, dilation: int = 1, reflect: bool = False) -> nn.Conv2d:
    """Depth-wise k x k convolution keeping the size ('same' padding)."""
    pad = dilation * (k // 2)
    return nn.Conv2d(channels, channels, k, padding=pad, dilation=dilation, groups=channels,
                     padding_mode="reflect" if reflect else "zeros")


class _ChannelLayerNorm(nn.Module):
    """Layer norm over channels with weight and bias (kept for strict loading; unused)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Module()
        self.body.weight = nn.Parameter(torch.ones(channels))
        self.body.bias = nn.Parameter(torch.zeros(channels))


class FourierBranch(nn.Module):
    """Global mixing in the frequency domain (the official ``FourierUnit``).

    ``rfft2`` (orthonormal) of each channel; real and imaginary parts become interleaved channels
    ``[c0.re, c0.im, c1.re, ...]``; then (optional BatchNorm), for the haze family a residual 3x3
    depth-wise conv, and a 1x1 conv with GELU; back with ``irfft2`` to the input size.  The generic
    family: BatchNorm, residual 3x3 depth-wise ``fpe``, ``groups`` 1x1 convs (``fdc``) summed with
    softmax weights from a 1x1 conv of the spectrum (``weight``), GELU.
    """

    def __init__(self, channels: int, family: str, fft_bn: bool = True, groups: int = 1):
        super().__init__()
        c2 = channels * 2
        self.family = family
        self.fft_bn = fft_bn
        self.groups = groups
        if family == "generic":
            self.bn = nn.BatchNorm2d(c2)
            self.fdc = nn.Conv2d(c2, c2 * groups, 1, groups=groups)
            self.weight = nn.Sequential(nn.Conv2d(c2, groups, 1), nn.Softmax(dim=1))
            self.fpe = _dw(c2, 3)
            return
        self.conv_layer = nn.Conv2d(c2, c2, 1, bias=False)      # unused by the official forward
        self.bn1 = nn.BatchNorm2d(c2)
        self.bn2 = nn.BatchNorm2d(c2)                           # unused by the official forward
        if family == "haze":
            self.norm1 = _ChannelLayerNorm(c2)                  # unused by the official forward
        self.conv_layer1 = nn.Sequential(nn.Conv2d(c2, c2, 1), nn.GELU())
        if family == "haze":
            self.conv_layer2 = nn.Sequential(_dw(c2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        spec = torch.fft.rfft2(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x,
                               norm="ortho")
        z = torch.stack((spec.real, spec.imag), dim=2).to(x.dtype).reshape(b, 2 * c, h, -1)
        if self.family == "generic":
            z = self.bn(z)
            z = self.fpe(z) + z
            mix = self.weight(z)                                     # [b, groups, h, w']
            z = self.fdc(z).reshape(b, self.groups, 2 * c, h, -1)
            z = F.gelu((z * mix[:, :, None]).sum(1))
        elif self.family == "haze":
            if self.fft_bn:
                z = self.bn1(z)
            z = self.conv_layer2(z) + z
            z = self.conv_layer1(z)
        else:
            z = self.conv_layer1(self.bn1(z))
        z = z.float().reshape(b, c, 2, h, -1)
        spec = torch.complex(z[:, :, 0], z[:, :, 1])
        return torch.fft.irfft2(spec, s=(h, w), norm="ortho").to(x.dtype)


class MultiKernelBlock(nn.Module):
    """1x1 expand to 2C, split in four, depth-wise 3/5/7 on parts 2-4, 1x1 back to C.

    The haze family's FFN (``OurFFN``: zero padding, one GELU after the concat) and the lol
    family's FFN and local branch (reflect padding, GELU after every conv).
    """

    def __init__(self, dim: int, family: str):
        super().__init__()
        self.family = family
        self.part = dim // 2
        lol = family == "lol"
        act = [nn.GELU()] if lol else []
        self.conv_init = nn.Sequential(nn.Conv2d(dim, dim * 2, 1), *act)
        self.conv1_1 = nn.Sequential(_dw(self.part, 3, reflect=lol), *act)
        self.conv1_2 = nn.Sequential(_dw(self.part, 5, reflect=lol), *act)
        self.conv1_3 = nn.Sequential(_dw(self.part, 7, reflect=lol), *act)
        self.conv_fina = nn.Sequential(nn.Conv2d(dim * 2, dim, 1), *act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0, p1, p2, p3 = torch.split(self.conv_init(x), self.part, dim=1)
        y = torch.cat((p0, self.conv1_1(p1), self.conv1_2(p2), self.conv1_3(p3)), dim=1)
        if self.family != "lol":
            y = F.gelu(y)
        return self.conv_fina(y)


class DilatedLocal(nn.Module):
    """Haze family local branch: depth-wise 3x3 with dilation 1 and 2 on the two channel halves."""

    def __init__(self, dim: int):
        super().__init__()
        self.CDilated_1 = _dw(dim // 2, 3, dilation=1)
        self.CDilated_2 = _dw(dim // 2, 3, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.cat((self.CDilated_1(a), self.CDilated_2(b)), dim=1)


class GlobalBranch(nn.Module):
    """Fourier branch with a residual; the lol and generic families wrap it in 1x1 convs on 2C
    channels."""

    def __init__(self, dim: int, family: str, fft_bn: bool, groups: int = 1):
        super().__init__()
        self.family = family
        self.wrapped = family in ("lol", "generic")
        if self.wrapped:
            self.conv_init = nn.Sequential(nn.Conv2d(dim, dim * 2, 1), nn.GELU())
            self.conv_fina = nn.Sequential(nn.Conv2d(dim * 2, dim, 1), nn.GELU())
            self.FFC = FourierBranch(dim * 2, family, fft_bn, groups)
        else:
            self.FFC = FourierBranch(dim, family, fft_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wrapped:
            x = self.conv_init(x)
            return self.conv_fina(self.FFC(x) + x)
        return self.FFC(x) + x


class Mixer(nn.Module):
    """Token mixer: 1x1 to 2C, local branch on one half, global branch on the other, attention."""

    def __init__(self, dim: int, family: str, fft_bn: bool, groups: int = 1):
        super().__init__()
        self.family = family
        self.dim = dim
        if family == "lol":
            self.conv_init = nn.Sequential(nn.Conv2d(dim, dim * 2, 1), nn.GELU())
            self.mixer_local = MultiKernelBlock(dim, family)
            self.ca_conv = nn.Sequential(nn.Conv2d(2 * dim, dim, 1), _dw(dim, 3, reflect=True), nn.GELU())
            self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 4, 1), nn.GELU(),
                                    nn.Conv2d(dim // 4, dim, 1), nn.Sigmoid())
        else:
            self.conv_init = nn.Sequential(nn.Conv2d(dim, dim * 2, 1))
            self.mixer_local = DilatedLocal(dim)
            self.ca_conv = nn.Sequential(nn.Conv2d(2 * dim, dim, 1))
            self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * dim, dim, 1), nn.ReLU(),
                                    nn.Conv2d(dim, 2 * dim, 1), nn.Sigmoid())
        self.mixer_gloal = GlobalBranch(dim, family, fft_bn, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv_init(x), self.dim, dim=1)
        y = torch.cat((self.mixer_local(a), self.mixer_gloal(b)), dim=1)
        if self.family == "lol":
            y = self.ca_conv(y)
            return self.ca(y) * y
        y = F.gelu(y)
        return self.ca_conv(self.ca(y) * y)


class Block(nn.Module):
    """Pre-norm block: x + mixer(BN(x)), then x + FFN(BN(x)); the haze and generic families scale
    by beta, gamma."""

    def __init__(self, dim: int, family: str, fft_bn: bool, groups: int = 1):
        super().__init__()
        self.family = family
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mixer = Mixer(dim, family, fft_bn, groups)
        self.ffn = MultiKernelBlock(dim, family)
        if family != "lol":
            self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))
            self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.family != "lol":
            x = x + self.mixer(self.norm1(x)) * self.beta
            return x + self.ffn(self.norm2(x)) * self.gamma
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.Module):
    def __init__(self, depth: int, dim: int, family: str, fft_bn: bool, groups: int = 1):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(dim, family, fft_bn, groups) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _wrap(module: nn.Module) -> nn.Module:
    """A container with the module as ``proj`` (the official key prefix)."""
    holder = nn.Module()
    holder.proj = module
    return holder


# --------------------------------------------------------------------------------------------
class SFHformer(nn.Module):
    """SFHformer for one released task (see :data:`VARIANTS`) or any :class:`SFHformerConfig`.

    Input ``[B, 3, H, W]`` RGB in 0..1 with H, W multiples of 4 (use :data:`SIZE_MULTIPLE` = 8 to
    match the official evaluation); output the restored image, same shape, not clamped.
    """

    def __init__(self, config: SFHformerConfig = VARIANTS["dehaze-outdoor"]):
        super().__init__()
        if config.family not in _STAGE_NAMES:
            raise ValueError(f"unknown SFHformer family '{config.family}' (expected haze, lol or generic)")
        self.config = config
        fam, c, d = config.family, config.width, config.depths
        dims = (c, 2 * c, 4 * c, 2 * c, c)
        self.stage_names = _STAGE_NAMES[fam]
        self.up_names = _UP_NAMES[fam]
        lol = fam == "lol"
        pad = "reflect" if lol else "zeros"

        self.patch_embed = _wrap(nn.Conv2d(config.in_channels, c, 3, padding=1, padding_mode=pad))
        for name, depth, dim in zip(self.stage_names, d, dims):
            setattr(self, name, Stage(depth, dim, fam, config.fft_bn, config.groups))
        for i, name in enumerate(("downsample1", "downsample2")):
            dim = dims[i]
            if lol:
                down = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
            else:
                down = nn.Sequential(nn.Conv2d(dim, dim * 2, 2, stride=2))
            setattr(self, name, _wrap(down))
        # skips fuse [upsampled, encoder] (2x channels) back to the level's width
        self.skip1 = nn.Conv2d(2 * c, c, 1)
        self.skip2 = nn.Conv2d(4 * c, 2 * c, 1)
        for name, cin, cout in zip(self.up_names, (4 * c, 2 * c), (2 * c, c)):
            if lol:
                conv = nn.Conv2d(cin, cout * 4, 3, padding=1, padding_mode="reflect")
            else:
                conv = nn.Conv2d(cin, cout * 4, 1, bias=False)
            setattr(self, name, _wrap(nn.Sequential(conv, nn.PixelShuffle(2))))
        out = config.out_channels
        unembed = [nn.Conv2d(c, out, 3, padding=1, padding_mode=pad)]
        if lol:
            unembed.append(nn.Conv2d(out, out, 3, padding=1, padding_mode="reflect"))
        self.patch_unembed = _wrap(nn.Sequential(*unembed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, s2, s3, s4, s5 = (getattr(self, n) for n in self.stage_names)
        up1, up2 = (getattr(self, n) for n in self.up_names)
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"SFHformer needs height and width that are multiples of 4, got {w}x{h}")
        # NCHW throughout: on a channels-last input (what a permuted ComfyUI IMAGE is) the FFT and
        # GELU-heavy blocks ran 15 % slower at 1 MP on the CPU (benchmarks/bench_models.py)
        x = x.contiguous()
        e1 = s1(self.patch_embed.proj(x))
        e2 = s2(self.downsample1.proj(e1))
        y = s3(self.downsample2.proj(e2))
        y = s4(self.skip2(torch.cat((up1.proj(y), e2), dim=1)))
        y = s5(self.skip1(torch.cat((up2.proj(y), e1), dim=1)))
        return x + self.patch_unembed.proj(y)


# --------------------------------------------------------------------------------------------
# checkpoints
def prepare_state_dict(obj) -> Dict[str, torch.Tensor]:
    """The official layout ``{'state_dict': {'module.<key>': tensor}}`` -> plain ``{key: tensor}``.

    Also accepts an already unwrapped dict with or without the ``module.`` prefix.
    """
    sd = obj
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ValueError("an SFHformer checkpoint must be a dict of tensors")
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            continue
        out[k[7:] if k.startswith("module.") else k] = v
    return out


_BLOCK_RE = re.compile(r"^(layer\d)\.blocks\.(\d+)\.")


def config_from_state_dict(sd: Mapping[str, torch.Tensor], fft_bn: bool = True) -> SFHformerConfig:
    """Infer family, width and depths from (prepared) state-dict keys and shapes.

    ``fft_bn`` cannot be read from the weights (dehaze ITS and OTS have the same keys); pass it.
    Raises ``KeyError``/``ValueError`` when the keys are not an SFHformer's.
    """
    if "patch_embed.proj.weight" not in sd:
        raise KeyError("patch_embed.proj.weight")
    groups = 1
    fdc = next((k for k in sd if k.endswith("mixer.mixer_gloal.FFC.fdc.weight")), None)
    if fdc is not None:
        family = "generic"
        mix = sd.get(fdc[: -len("fdc.weight")] + "weight.0.weight")
        groups = int(mix.shape[0]) if mix is not None else 1
    elif "layer9.blocks.0.norm1.weight" in sd or "upsample3.proj.0.weight" in sd:
        family = "haze"
    elif "upsample1.proj.0.weight" in sd:
        family = "lol"
    else:
        raise KeyError("upsample3.proj.0.weight / upsample1.proj.0.weight")
    w = sd["patch_embed.proj.weight"]
    width, in_ch = int(w.shape[0]), int(w.shape[1])
    counts: Dict[str, int] = {}
    for k in sd:
        m = _BLOCK_RE.match(k)
        if m:
            counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
    depths = tuple(counts.get(n, 0) for n in _STAGE_NAMES[family])
    out_ch = int(sd["patch_unembed.proj.0.weight"].shape[0])
    return SFHformerConfig(family, width, depths, fft_bn=fft_bn if family == "haze" else True,
                           in_channels=in_ch, out_channels=out_ch, groups=groups)


def variant_name(config: SFHformerConfig) -> str:
    """The released task whose size matches ``config`` (``"custom"`` when none does)."""
    for name, cfg in VARIANTS.items():
        if cfg == config:
            return name
    return "custom"


def build_from_state_dict(obj, fft_bn: bool = True) -> Tuple[SFHformer, SFHformerConfig]:
    """Build the SFHformer a checkpoint describes and load it with ``strict=True`` (eval mode)."""
    sd = prepare_state_dict(obj)
    cfg = config_from_state_dict(sd, fft_bn=fft_bn)
    net = SFHformer(cfg)
    net.load_state_dict(sd, strict=True)
    return net.eval(), cfg


def official_layout(net: SFHformer) -> dict:
    """``net``'s weights in the official checkpoint layout (for tests and fixtures)."""
    return {"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}
