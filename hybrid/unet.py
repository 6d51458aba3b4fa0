"""The hybrid restorer's U-Net: a small torch encoder-decoder with skip connections.

Architecture (Ronneberger et al. 2015, "U-Net", reduced): a 2× pixel-unshuffle (space-to-depth),
three encoder levels of two 3×3 conv + LeakyReLU blocks (``base``, ``2·base``, ``4·base``
channels), a ``8·base`` bottleneck at 1/16 resolution with a global-context branch, and a mirrored
decoder with transposed-conv upsampling, concatenated skips and a pixel shuffle back to full size.

Global context: the bottleneck mean is joined by the input's own per-channel statistics
(:func:`input_statistics`: 1/10/50/90/99 % quantiles, mean, std).  A mean of conv features cannot
easily tell a raised black point (fading) from a bright subject, the quantiles state it directly.
This vector goes through an MLP that is added back to the bottleneck, so every pixel sees the
global cast and fading.  A second MLP predicts a global colour transform: a 3×3 matrix ``A`` and an
offset ``b`` per image, bounded to ±0.5 around the identity by a tanh.  Fading, yellowing and colour
casts are such transforms.  The decoder adds a local residual:
``out = A x + b + f(x)``.  Images are float 0..1, ``[N, 3, H, W]`` with H, W multiples of 16.  The
first shipped weights had no statistics (``stats=False``: colour transform from the bottleneck
mean by one linear layer); :func:`model_from_state_dict` still loads that layout.

With ``base=16`` it has ~0.54 M parameters (~2.2 MB as float32 safetensors) and needs about 9 GMAC
per megapixel.

A Keras ``.h5`` U-Net saved by the original TensorFlow design loads through :mod:`.keras_unet`
(:func:`load_unet_file` picks the loader by file type).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn
import torch.nn.functional as F

WEIGHTS_RELPATH = "hybrid/unet.safetensors"
ARCH = "RestoreKit-UNet"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
    )


#: quantiles of each input channel given to the global branches (with the mean and std)
STAT_QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)
_STAT_SAMPLES = 65536


def input_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per-channel quantiles (:data:`STAT_QUANTILES`), mean and std of ``x [N,C,H,W]`` → ``[N, 7C]``.

    Computed on a strided subsample of at most ~65k pixels per channel (quantiles by sorting, no
    size limit), in float32 whatever the input dtype.  They tell the colour branch the black and
    white points and the spread directly: fading raises the 1 % quantile, yellowing lowers the blue
    channel's quantiles, a cast separates the channel medians.
    """
    n, c, h, w = x.shape
    step = max(1, math.ceil(math.sqrt(h * w / _STAT_SAMPLES)))
    xs = x[:, :, ::step, ::step].reshape(n, c, -1).float()
    srt = xs.sort(dim=2).values
    last = srt.shape[2] - 1
    idx = torch.tensor([round(q * last) for q in STAT_QUANTILES], device=x.device)
    qs = srt.index_select(2, idx).reshape(n, -1)
    return torch.cat([qs, xs.mean(2), xs.std(2, unbiased=False)], 1).to(x.dtype)


class RestoreUNet(nn.Module):
    """Residual U-Net on a 2× space-to-depth input.  Input/output ``[N,3,H,W]`` 0..1, H, W % 16 == 0.

    ``pixel_unshuffle(2)`` folds each 2×2 block into channels (3 → 12 at H/2), then three encoder
    levels (``base``, ``2·base``, ``4·base`` channels at H/2, H/4, H/8), a ``8·base`` bottleneck at
    H/16 with global context, the mirrored decoder, and ``pixel_shuffle(2)`` back to full size.
    Working at half resolution from the start keeps it at ~9 kMAC per pixel for ``base=16``.
    """

    size_multiple = 16

    def __init__(self, base: int = 16, in_channels: int = 3, out_channels: int = 3, stats: bool = True):
        super().__init__()
        c1, c2, c3, c4 = base, base * 2, base * 4, base * 8
        self.base = base
        self.stats = stats
        self.out_channels = out_channels
        self.enc1 = _block(in_channels * 4, c1)
        self.enc2 = _block(c1, c2)
        self.enc3 = _block(c2, c3)
        self.pool = nn.MaxPool2d(2)
        self.mid = _block(c3, c4)
        self.glob = nn.Sequential(nn.Linear(c4, c4), nn.LeakyReLU(0.1, inplace=True), nn.Linear(c4, c4))
        self.up3 = nn.ConvTranspose2d(c4, c3, 2, stride=2)
        self.dec3 = _block(c3 * 2, c3)
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = _block(c2 * 2, c2)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = _block(c1 * 2, c1)
        self.head = nn.Conv2d(c1, out_channels * 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        n_colour = out_channels * in_channels + out_channels
        if stats:
            # global context and colour transform from the bottleneck mean and the input's own
            # statistics.  This glob replaces the plain one above; that one is still created first
            # so the seeded initialisation, and with it `restorekit retrain`, stays as shipped.
            n_stats = in_channels * (len(STAT_QUANTILES) + 2)
            self.glob = nn.Sequential(nn.Linear(c4 + n_stats, c4), nn.LeakyReLU(0.1, inplace=True),
                                      nn.Linear(c4, c4))
            self.colour = nn.Sequential(nn.Linear(c4 + n_stats, c4), nn.LeakyReLU(0.1, inplace=True),
                                        nn.Linear(c4, n_colour))
            last = self.colour[-1]
        else:  # layout of the first shipped weights: colour transform from the bottleneck mean only
            self.colour = nn.Linear(c4, n_colour)
            last = self.colour
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(F.pixel_unshuffle(x, 2))
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        m = self.mid(self.pool(e3))
        g = m.mean(dim=(2, 3))
        if self.stats:
            g = torch.cat([g, input_statistics(x)], 1)
        m = m + self.glob(g)[:, :, None, None]
        d3 = self.dec3(torch.cat([self.up3(m), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        n, cin = x.shape[0], x.shape[1]
        cout = self.out_channels
        t = 0.5 * torch.tanh(self.colour(g))  # bounded: each entry of A - I and b within ±0.5
        a = t[:, : cout * cin].view(n, cout, cin) + torch.eye(cout, cin, device=x.device, dtype=x.dtype)
        b = t[:, cout * cin:].view(n, cout, 1, 1)
        base = torch.einsum("noc,nchw->nohw", a, x) + b
        return base + F.pixel_shuffle(self.head(d1), 2)


def _handle(module: nn.Module, arch: str, source: str, description: str, size_multiple: int = 8,
            supports_half: bool = False, tiling: str = "supported"):
    from ..scripts.inference.handle import ModelHandle

    return ModelHandle(module=module.eval(), arch=arch, scale=1, in_channels=3, out_channels=3,
                       size_multiple=size_multiple, pad_mode="reflect", min_overlap=32,
                       tiling=tiling, supports_half=supports_half, supports_bfloat16=supports_half,
                       clamp=True, source=source, description=description)


#: the bound a reduced-precision (bf16/fp16) copy of the U-Net must meet against fp32 to be chosen
#: under ``precision="auto"``: (mean, 99.9th percentile) |difference| on the probe tile, 0..1 units.
#: The shipped U-Net in bf16 on a 384x512 photograph: mean 1.1e-3, max 7.7e-3 (1.4x faster on AMX)
REDUCED_TOLERANCE = (2e-3, 2e-2)


def handle_from_module(model: RestoreUNet, source: str = "") -> "ModelHandle":  # noqa: F821
    """Wrap a :class:`RestoreUNet` in a ModelHandle for the memory-safe runner."""
    # the global branches read the whole input's statistics and predict one colour transform for it:
    # tiles would each compute their own (a 256 px validation image cut into 144 px tiles lost up to
    # 1 dB), so tiling is discouraged: the runner takes the whole image whenever it fits
    # (planning.choose_fewest_seams)
    handle = _handle(model, ARCH, source, f"RestoreKit hybrid U-Net, base {model.base}",
                     size_multiple=RestoreUNet.size_multiple, supports_half=True, tiling="discouraged")
    handle.reduced_tolerance = REDUCED_TOLERANCE
    return handle


def base_from_state_dict(sd: Dict[str, torch.Tensor]) -> int:
    w = sd.get("enc1.0.weight")
    if w is None:
        raise ValueError("not a RestoreKit hybrid U-Net state dict (no 'enc1.0.weight')")
    return int(w.shape[0])


def model_from_state_dict(sd: Dict[str, torch.Tensor]) -> RestoreUNet:
    """A :class:`RestoreUNet` of the size and layout the state dict was saved from (strict load)."""
    model = RestoreUNet(base=base_from_state_dict(sd), stats="colour.weight" not in sd)
    model.load_state_dict(sd, strict=True)
    return model


def load_shipped(relpath: str = WEIGHTS_RELPATH, models_dir: Optional[str] = None) -> "ModelHandle":  # noqa: F821
    """The trained U-Net shipped in ``models/`` (sha256-checked, safetensors, strict load)."""
    from ..scripts.shipped_models import load_torch_weights, model_path

    kw = {"models_dir": models_dir} if models_dir else {}
    model = model_from_state_dict(load_torch_weights(relpath, **kw))
    return handle_from_module(model, source=model_path(relpath, **kw))


def load_unet_file(path: str) -> "ModelHandle":  # noqa: F821
    """A U-Net from a user file: ``.h5``/``.keras`` through Keras, else a RestoreUNet state dict."""
    if path.lower().endswith((".h5", ".hdf5", ".keras")):
        from .keras_unet import load_keras_h5

        return load_keras_h5(path)
    from ..scripts.inference.files import load_state_dict, unwrap_state_dict

    model = model_from_state_dict(unwrap_state_dict(load_state_dict(path)))
    return handle_from_module(model, source=path)


# --- inference ----------------------------------------------------------------------------------
def run(handle, image, device: str = "auto", tile: int = 0, progress: bool = False, precision: str = "auto"):
    """Run a U-Net handle on ``image`` (numpy ``[H,W,3]`` or ``[B,H,W,3]`` float 0..1).

    Uses the memory-safe runner ``scripts.inference.runner.run_model`` (tiling, OOM fallback, and the
    fast paths: channels-last, and under ``precision="auto"`` a bf16/fp16 copy where it is native and
    within :data:`REDUCED_TOLERANCE` of fp32); returns ``(numpy image of the input's rank, RunReport)``.
    """
    import numpy as np

    arr = np.asarray(image, np.float32)
    single = arr.ndim == 3
    batch = torch.from_numpy(np.ascontiguousarray(arr[None] if single else arr))
    from ..scripts.inference.runner import run_model

    out, report = run_model(handle, batch, device=device, tile=tile, progress=progress, precision=precision)
    res = out.detach().cpu().numpy().astype(np.float32)
    return (res[0] if single else res), report
