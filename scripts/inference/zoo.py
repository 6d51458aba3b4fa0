"""Loaders for the official restoration weights RestoreKit supports, each returning a ModelHandle.

=================  ==========================================  ===================  =================
model              file(s) (official names)                    loads via            model folder
=================  ==========================================  ===================  =================
Real-ESRGAN        RealESRGAN_x4plus.pth,                      spandrel ESRGAN /    upscale_models
                   RealESRGAN_x4plus_anime_6B.pth,             Compact
                   realesr-general-x4v3.pth (+ its
                   realesr-general-wdn-x4v3.pth twin)
SCUNet             scunet_color_real_psnr.pth,                 spandrel SCUNet      upscale_models
                   scunet_color_real_gan.pth
SFHformer          sfhformer_haze_its.pth, sfhformer_haze_      scripts/archs/       restorekit
                   ots.pth, sfhformer_11211_lolv2s.pth,        sfhformer.py
                   sfhformer_22422_lolv2r.pth, GoPro weights
Noise-DA           denoise.pth, derain.pth, deblur.pth         scripts/archs/       restorekit
                   (S-Lab licence, non-commercial)             noise_da.py
=================  ==========================================  ===================  =================

Every loader reads the file without running pickled code (:func:`scripts.inference.files.load_state_dict`)
and refuses a file that is not what it expects with :class:`scripts.inference.files.ModelFileError`
naming the file and the expected model.  Handles come back on the CPU in float32 and eval mode.

Real-ESRGAN's "denoise strength" (Wang et al., Real-ESRGAN, ICCVW 2021; the official
``inference_realesrgan.py`` ``--denoise_strength``) is deep network interpolation: the weights of
realesr-general-x4v3 (strong denoising) and realesr-general-wdn-x4v3 (weak denoising) are averaged,
``w = s * general + (1 - s) * wdn``, s in 0..1, before the network is built.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

import torch

from .files import ModelFileError, load_spandrel, load_state_dict, unwrap_state_dict
from .handle import ModelHandle

#: node family -> model-folder kind the files live in
FOLDER_KINDS = {"realesrgan": "upscale_models", "scunet": "upscale_models",
                "sfhformer": "restorekit", "noise_da": "restorekit"}

#: SFHformer task choices (``auto``: from the weights, and the file name for indoor dehazing)
SFH_TASKS = ("auto", "dehaze-indoor", "dehaze-outdoor", "low-light", "motion-deblur")
#: Noise-DA checkpoints (one network, three official weight sets)
NOISE_DA_TASKS = ("denoise", "derain", "deblur")

REALESRGAN_ARCHS = ("ESRGAN", "RealESRGAN", "Compact", "RealESRGAN Compact")
#: SCUNet's tile rule (see :func:`tile_rule`)
SCUNET_TILE_MULTIPLE = 64
SCUNET_MIN_OVERLAP = 64


def _name(path: str) -> str:
    return os.path.basename(str(path)) or str(path)


# --- Real-ESRGAN -------------------------------------------------------------------------------
def wdn_twin_path(path: str) -> Tuple[Optional[str], bool]:
    """The ``-wdn-`` twin of a realesr-general file and whether ``path`` is itself the wdn one.

    ``realesr-general-x4v3.pth`` <-> ``realesr-general-wdn-x4v3.pth`` (same folder, same
    extension).  Returns ``(None, False)`` for files outside that naming scheme.
    """
    folder, base = os.path.split(str(path))
    if "realesr-general-wdn-" in base:
        return os.path.join(folder, base.replace("realesr-general-wdn-", "realesr-general-")), True
    if "realesr-general-" in base:
        return os.path.join(folder, base.replace("realesr-general-", "realesr-general-wdn-")), False
    return None, False


def blend_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], weight_a: float,
                      names: Tuple[str, str] = ("a", "b")) -> Dict[str, torch.Tensor]:
    """``weight_a * a + (1 - weight_a) * b`` key by key (deep network interpolation).

    Both dicts must have the same keys and shapes (else :class:`ModelFileError` naming both).
    """
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        raise ModelFileError(
            f"model files '{names[0]}' and '{names[1]}' cannot be blended: their weights have "
            f"different keys or shapes (expected the realesr-general-x4v3 / -wdn- pair)")
    w = float(weight_a)
    out = {}
    for k in a:
        ta, tb = a[k], b[k]
        if ta.is_floating_point():
            out[k] = (w * ta.float() + (1.0 - w) * tb.float()).to(ta.dtype)
        else:
            out[k] = ta
    return out


def _expect_arch(handle: ModelHandle, allowed, path: str, what: str) -> ModelHandle:
    if handle.arch not in allowed:
        raise ModelFileError(
            f"model file '{_name(path)}' is a {handle.arch} model; expected {what}")
    return handle


def load_realesrgan(path: str, denoise_strength: float = 1.0) -> Tuple[ModelHandle, str]:
    """Load a Real-ESRGAN file; returns the handle and a note on what was loaded.

    For realesr-general-x4v3 and ``denoise_strength < 1`` the ``-wdn-`` twin (same folder) is
    blended in; a missing twin is a :class:`ModelFileError` naming it.  ``denoise_strength`` is
    ignored (and the note says so) for the other Real-ESRGAN files.
    """
    what = "a Real-ESRGAN network (RRDBNet as in RealESRGAN_x4plus*.pth, or SRVGGNetCompact as in realesr-general-x4v3.pth)"
    s = float(denoise_strength)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"denoise strength must be within 0..1, got {s}")
    twin, is_wdn = wdn_twin_path(path)
    note = ""
    if twin is not None and s < 1.0:
        if not os.path.isfile(twin):
            raise ModelFileError(
                f"denoise strength {s:g} < 1 blends '{_name(path)}' with its twin '{_name(twin)}', "
                f"which is not in the same folder; put it there or set denoise strength to 1")
        general, wdn = (twin, path) if is_wdn else (path, twin)
        try:
            sd_g = unwrap_state_dict(load_state_dict(general))
            sd_w = unwrap_state_dict(load_state_dict(wdn))
        except ModelFileError as exc:
            msg = str(exc)
            raise ModelFileError(msg if "model file" in msg else f"model file '{_name(path)}': {msg}") from None
        blended = blend_state_dicts(sd_g, sd_w, s, (_name(general), _name(wdn)))
        handle = load_spandrel({"params": blended}, source=str(path))
        note = f"{_name(general)} x {s:g} + {_name(wdn)} x {1 - s:g} (deep network interpolation)"
    else:
        from .ncnn import is_ncnn_pair, load_ncnn

        if is_ncnn_pair(str(path)):  # an ncnn pair: converted once into the cache folder
            handle, note = load_ncnn(str(path) if str(path).endswith(".param") else str(path)[:-4] + ".param")
        else:
            handle = load_spandrel(str(path))
        if twin is None and s < 1.0:
            note = "denoise strength applies to realesr-general-x4v3 only: ignored"
        elif twin is not None:
            note = f"{_name(path)} alone (denoise strength 1)"
    _expect_arch(handle, REALESRGAN_ARCHS, path, what)
    handle.description = f"Real-ESRGAN ({handle.arch}) via spandrel"
    handle.min_overlap = max(handle.min_overlap, 16)
    return handle, note


# --- SCUNet -----------------------------------------------------------------------------------
def load_scunet(path: str) -> ModelHandle:
    """Load an official SCUNet file through spandrel.

    The handle pads to a multiple of 64 with *replicate* padding, as the official code does
    (spandrel alone pads by reflection, which changes the borders of sizes not a multiple of 64),
    and asks for tiles that are multiples of 64 with at least 64 px overlap.
    """
    handle = load_spandrel(str(path))
    _expect_arch(handle, ("SCUNet",), path, "SCUNet (scunet_color_real_psnr.pth / scunet_color_real_gan.pth)")
    handle.size_multiple = SCUNET_TILE_MULTIPLE
    handle.pad_mode = "replicate"
    handle.min_overlap = SCUNET_MIN_OVERLAP
    handle.tiling = "supported"
    handle.description = "SCUNet via spandrel (replicate pad to 64, tiles multiple of 64, overlap >= 64)"
    return handle


def tile_rule(family: str, tile: int, overlap: int) -> Tuple[int, int, dict]:
    """A node's tile and overlap requests made valid for ``family``: ``(tile, overlap, run_model
    keyword arguments)``.

    SCUNet (windows of the official code need it): a tile is a multiple of 64 px and at least
    3·64, the overlap at least 64 px, and the out-of-memory chain never halves below 3·64.  Other
    families take the request as it is (the runner rounds to the size multiple).
    """
    tile, overlap = int(tile), int(overlap)
    if family != "scunet":
        return tile, overlap, {}
    m = SCUNET_TILE_MULTIPLE
    if tile:
        tile = max(3 * m, -(-tile // m) * m)  # a multiple of 64 with room for a 64 px overlap
    return tile, max(overlap, SCUNET_MIN_OVERLAP), {"min_tile": 3 * m}


# --- our own architectures ----------------------------------------------------------------------
def _read(path: str, expected: str):
    obj = load_state_dict(str(path))
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"model file '{_name(path)}' holds a {type(obj).__name__}; expected {expected}")
    return obj


def load_sfhformer(path: str, task: str = "auto") -> Tuple[ModelHandle, str]:
    """Load an official SFHformer checkpoint (``{'state_dict': {'module.*': ...}}``), strictly.

    ``task``: one of :data:`SFH_TASKS`.  The dehazing ITS (indoor) weights run without the Fourier
    unit's BatchNorm (the official test setting), OTS and the other tasks with it; ``auto``
    chooses indoor when the file name contains ``its``.  Returns the handle and the variant name.
    """
    from ..archs import sfhformer as sfh

    expected = ("an SFHformer checkpoint ({'state_dict': {'module.patch_embed.proj.weight': ...}} as in "
                "sfhformer_haze_its.pth / sfhformer_haze_ots.pth / sfhformer_*_lolv2*.pth / GoPro)")
    if task not in SFH_TASKS:
        raise ValueError(f"SFHformer task must be one of {SFH_TASKS}, got {task!r}")
    obj = _read(path, expected)
    if task == "auto":
        fft_bn = "its" not in _name(path).lower().replace("sfhformer", "")
    else:
        fft_bn = task != "dehaze-indoor"
    try:
        net, cfg = sfh.build_from_state_dict(obj, fft_bn=fft_bn)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        detail = str(exc).splitlines()[0][:300]
        raise ModelFileError(f"model file '{_name(path)}' is not {expected}: {detail}") from None
    variant = sfh.variant_name(cfg)
    family_of_task = {"dehaze-indoor": "haze", "dehaze-outdoor": "haze", "motion-deblur": "haze", "low-light": "lol"}
    if task != "auto" and family_of_task[task] != cfg.family:
        raise ModelFileError(
            f"model file '{_name(path)}' holds SFHformer '{variant}' weights, not the '{task}' task; "
            f"choose task 'auto' or the matching file")
    handle = ModelHandle(
        module=net, arch="SFHformer", scale=1, in_channels=cfg.in_channels,
        out_channels=cfg.out_channels, size_multiple=sfh.SIZE_MULTIPLE, pad_mode="reflect",
        min_overlap=64, tiling="discouraged", supports_half=False, supports_bfloat16=False,
        source=str(path), description=f"SFHformer {variant} (width {cfg.width}, depths {cfg.depths}, "
                                      f"Fourier BatchNorm {'on' if cfg.fft_bn else 'off'})",
        extra={"variant": variant, "family": cfg.family, "fft_bn": cfg.fft_bn},
    )
    return handle, variant


def load_noise_da(path: str) -> ModelHandle:
    """Load Noise-DA's restoration network from an official training checkpoint, strictly.

    Keeps ``RestorationNet.*`` and drops the diffusion model (``denoise_fn.*``).
    """
    from ..archs import noise_da as nda

    expected = ("a Noise-DA checkpoint (the training state with 'RestorationNet.down_path.0.block.0.weight' "
                "... as in denoise.pth / derain.pth / deblur.pth)")
    obj = _read(path, expected)
    try:
        net = nda.build_from_state_dict(obj)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        detail = str(exc).splitlines()[0][:300]
        raise ModelFileError(f"model file '{_name(path)}' is not {expected}: {detail}") from None
    return ModelHandle(
        module=net, arch="Noise-DA", scale=1, in_channels=net.in_channels, out_channels=net.out_channels,
        size_multiple=net.size_multiple, pad_mode=nda.PAD_MODE, min_overlap=64, tiling="supported",
        supports_half=True, supports_bfloat16=True, source=str(path),
        description=f"Noise-DA RestorationNet (width {net.width}, depth {net.depth}); {nda.LICENSE_NAME}",
    )


# --- cache ------------------------------------------------------------------------------------
_CACHE: "OrderedDict[tuple, Tuple[ModelHandle, str]]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 2


def _file_key(path: Optional[str]):
    if not path or not os.path.isfile(path):
        return (path, None, None)
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def load(family: str, path: str, **options) -> Tuple[ModelHandle, str]:
    """Load (or reuse) the model of node ``family`` (a key of :data:`FOLDER_KINDS`) from ``path``.

    Returns ``(handle, note)``.  The last :data:`CACHE_SIZE` handles are kept, keyed by file
    identity (path, size, mtime) and options, so a changed file is reloaded.
    """
    if family == "realesrgan":
        twin, _ = wdn_twin_path(path)
        key = (family, _file_key(path), _file_key(twin), round(float(options.get("denoise_strength", 1.0)), 4))
        loader = lambda: load_realesrgan(path, options.get("denoise_strength", 1.0))  # noqa: E731
    elif family == "scunet":
        key = (family, _file_key(path))
        loader = lambda: (load_scunet(path), "")  # noqa: E731
    elif family == "sfhformer":
        key = (family, _file_key(path), options.get("task", "auto"))
        loader = lambda: load_sfhformer(path, options.get("task", "auto"))  # noqa: E731
    elif family == "noise_da":
        key = (family, _file_key(path))
        loader = lambda: (load_noise_da(path), "")  # noqa: E731
    else:
        raise ValueError(f"unknown model family {family!r} (expected one of {tuple(FOLDER_KINDS)})")
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    result = loader()
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
