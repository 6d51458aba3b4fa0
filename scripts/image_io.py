"""Image files in and out, done once for the whole pack (CLI, Python API, file-reading nodes).

Reading (:func:`read_image`) gives float32 pixels ``[H, W, C]`` in 0..1 with C = 1 (grey), 3 (RGB)
or 4 (RGBA; grey + alpha is given as RGBA with the grey replicated) plus an :class:`ImageMeta`
saying what the file held, so :func:`write_image` can write the result back the same way:

* **Orientation**: the EXIF/TIFF orientation tag is applied to the pixels (a portrait photo comes
  out upright) and reset to 1 in the EXIF block that is carried over.
* **Bit depth**: 8- and 16-bit PNG and TIFF, 8-bit JPEG/WebP/BMP/GIF, 32-bit float (and float16)
  TIFF, EXR (half or float) when the optional ``OpenEXR`` package is installed.  16-bit samples
  are scaled by 1/65535, so a 16-bit file read and written back is bit-exact.
* **Greyscale** stays greyscale: ``meta.grey`` is set, and a grey source whose result has equal
  channels (within one output step) is written as grey again.
* **Metadata** carried over where the output format can hold it: ICC profile (PNG/JPEG/WebP/TIFF),
  EXIF (PNG/JPEG/WebP), XMP (PNG/JPEG/WebP/TIFF), resolution (PNG/JPEG/TIFF), PNG text chunks,
  TIFF descriptive tags (Description, Artist, Copyright, DateTime), EXR comments.  Every written
  file says ``Software: RestoreKit <version>`` (:func:`read_software` reads it back), which is how
  the batch tools recognise their own earlier outputs.
* **Float files**: EXR holds scene-linear light by convention, so its pixels are sRGB-encoded on
  read and decoded back on write (IEC 61966-2-1); float TIFF is taken as display-referred.  RestoreKit
  works on 0..1 images: float values outside 0..1 are clipped and ``meta.notes`` says so.

Libraries: Pillow (JPEG, WebP, BMP, GIF, 8-bit PNG, metadata), OpenCV (16-bit PNG pixels, PNG
encoding), tifffile (TIFF), OpenEXR (EXR, optional: ``pip install OpenEXR``).  LZW- or
JPEG-compressed TIFFs need ``imagecodecs`` in tifffile; without it Pillow reads those it can read
without losing depth, and the others are refused with a message naming the package.

This module imports no torch; it is part of the library and never imports ComfyUI.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import __version__ as _PACK_VERSION

#: written into every output file (PNG tEXt / EXIF / TIFF tag / EXR attribute ``Software``)
SOFTWARE = f"RestoreKit {_PACK_VERSION}"
SOFTWARE_PREFIX = "RestoreKit"

#: file extension -> format name (what :func:`read_image` reads)
IMAGE_EXTENSIONS: Dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF", ".exr": "EXR",
}
#: format name -> extension used for outputs
FORMAT_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp",
                    "EXR": ".exr"}
#: short names accepted on the command line -> format name
FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF",
                "webp": "WEBP", "bmp": "BMP", "exr": "EXR"}
#: bit depths each output format can store (32 = float; EXR 16 = half float)
WRITE_DEPTHS = {"PNG": (8, 16), "TIFF": (8, 16, 32), "JPEG": (8,), "WEBP": (8,), "BMP": (8,),
                "EXR": (16, 32)}
#: formats that hold an alpha channel
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP", "BMP", "EXR"}
#: float values above this are refused by :func:`to_float01` as most likely 0..255 or 0..65535 data
FLOAT_REFUSE_ABOVE = 2.0
DEFAULT_QUALITY = 95

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class ImageMeta:
    """What an image file held besides its pixels (see the module docstring)."""

    format: str = "PNG"
    bit_depth: int = 8                   # bits per sample as stored: 8, 16 or 32
    float_samples: bool = False          # float TIFF / EXR
    grey: bool = False                   # the file was greyscale (with or without alpha)
    alpha: bool = False
    icc_profile: Optional[bytes] = None
    exif: Optional[bytes] = None         # EXIF block (``Exif\\0\\0`` + TIFF), orientation reset to 1
    xmp: Optional[bytes] = None
    dpi: Optional[Tuple[float, float]] = None
    text: Dict[str, str] = field(default_factory=dict)   # PNG text chunks, TIFF descriptive tags
    orientation: int = 1                 # the EXIF orientation that was applied (1 = none)
    linear: bool = False                 # EXR: the file holds linear light
    frames: int = 1
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: format, depth, colour, metadata present."""
        depth = f"{self.bit_depth}-bit{' float' if self.float_samples else ''}"
        colour = ("grey" if self.grey else "RGB") + ("+alpha" if self.alpha else "")
        extras = [k for k, v in (("ICC", self.icc_profile), ("EXIF", self.exif), ("XMP", self.xmp),
                                 ("dpi", self.dpi), ("text", self.text)) if v]
        if self.orientation != 1:
            extras.append(f"orientation {self.orientation} applied")
        return f"{self.format} {depth} {colour}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass
class ImageData:
    """Pixels float32 ``[H, W, C]`` (C = 1, 3 or 4) in 0..1 plus the file's :class:`ImageMeta`."""

    pixels: np.ndarray
    meta: ImageMeta
    path: str = ""


@dataclass
class WriteResult:
    path: str
    format: str
    bit_depth: int
    grey: bool
    notes: List[str] = field(default_factory=list)


def is_image_file(path: str) -> bool:
    """True when the extension is one :func:`read_image` reads."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"'{os.path.basename(path)}': unknown image extension '{ext}' "
                         f"(known: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return IMAGE_EXTENSIONS[ext]


# --- numpy intake --------------------------------------------------------------------------------
def to_float01(array, name: str = "image") -> Tuple[np.ndarray, str, List[str]]:
    """An image array as float32 0..1; returns ``(array, kind, notes)``.

    * ``uint8`` is divided by 255, ``uint16`` by 65535 (``kind`` ``"uint8"`` / ``"uint16"``);
    * float16/32/64 arrays are taken as 0..1 (``kind`` ``"float"``): values outside are clipped and
      a note says how many; an array whose maximum exceeds :data:`FLOAT_REFUSE_ABOVE` is refused
      (it is almost certainly 0..255 or 0..65535 data: pass it as uint8/uint16 or divide it);
    * NaN/inf, booleans and other integer types are refused with a ``ValueError`` naming the problem.
    """
    arr = np.asarray(array)
    notes: List[str] = []
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0), "uint8", notes
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0), "uint16", notes
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: dtype {arr.dtype} is not supported; pass uint8 (0..255), uint16 "
                         f"(0..65535) or float (0..1)")
    out = arr.astype(np.float32)
    if out.size and not np.isfinite(out.sum(dtype=np.float64)):
        raise ValueError(f"{name}: the image contains NaN or infinite values")
    if out.size:
        lo, hi = float(out.min()), float(out.max())
        if hi > FLOAT_REFUSE_ABOVE:
            raise ValueError(f"{name}: float pixel values must be in 0..1, but the maximum is {hi:g}; "
                             f"pass 8-bit data as uint8 or 16-bit data as uint16 (or divide by 255/65535)")
        if lo < 0.0 or hi > 1.0:
            n = int(np.count_nonzero((out < 0) | (out > 1)))
            out = np.clip(out, 0.0, 1.0)
            notes.append(f"{n} float value(s) outside 0..1 clipped (range was {lo:.4g}..{hi:.4g})")
    return out, "float", notes


def from_float01(array: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`to_float01`: float 0..1 back to ``kind`` (uint8 / uint16 rounded, float32)."""
    a = np.clip(np.asarray(array, np.float32), 0.0, 1.0)
    if kind == "uint8":
        return np.round(a * 255.0).astype(np.uint8)
    if kind == "uint16":
        return np.round(a * 65535.0).astype(np.uint16)
    return a


# --- orientation ---------------------------------------------------------------------------------
def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn/flip ``[H, W, ...]`` pixels so that EXIF ``orientation`` (1..8, TIFF 6.0 tag 274) becomes 1."""
    o = int(orientation or 1)
    if o == 2:
        return pixels[:, ::-1]
    if o == 3:
        return pixels[::-1, ::-1]
    if o == 4:
        return pixels[::-1]
    if o == 5:
        return np.swapaxes(pixels, 0, 1)
    if o == 6:
        return np.rot90(pixels, k=-1)
    if o == 7:
        return np.rot90(np.swapaxes(pixels, 0, 1), k=2)
    if o == 8:
        return np.rot90(pixels, k=1)
    return pixels


def _exif_reset(exif) -> Tuple[int, Optional[bytes]]:
    """``(orientation, EXIF bytes with orientation 1)`` from a Pillow Exif object."""
    if exif is None or len(exif) == 0:
        return 1, None
    orientation = int(exif.get(274, 1) or 1)
    if 274 in exif:
        exif[274] = 1
    try:
        data = exif.tobytes()
    except Exception:  # a malformed EXIF block is dropped rather than written back broken
        data = None
    return (orientation if 1 <= orientation <= 8 else 1), data


# --- reading -------------------------------------------------------------------------------------
def read_image(path: str) -> ImageData:
    """Read an image file (see the module docstring).  ``ValueError`` naming the file if unreadable."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ValueError(f"'{name}': no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".exr":
            data = _read_exr(path)
        elif ext in (".tif", ".tiff"):
            data = _read_tiff(path)
        else:
            data = _read_pillow(path)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if f"'{name}'" in msg else f"'{name}': {msg}") from exc
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error, KeyError, IndexError) as exc:
        raise ValueError(f"cannot read '{name}' as an image: {exc}") from exc
    data.path = path
    return data


def _pillow_meta(im, fmt: str) -> ImageMeta:
    meta = ImageMeta(format=fmt)
    info = im.info
    meta.icc_profile = info.get("icc_profile") or None
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    meta.xmp = xmp.encode("utf-8") if isinstance(xmp, str) else (xmp or None)
    dpi = info.get("dpi")
    if dpi and all(float(d) > 0 for d in dpi):
        meta.dpi = (float(dpi[0]), float(dpi[1]))
    text = getattr(im, "text", None) if fmt == "PNG" else None
    if text:
        meta.text = {str(k): str(v) for k, v in text.items() if k != "XML:com.adobe.xmp"}
    if fmt == "JPEG" and info.get("comment"):
        c = info["comment"]
        meta.text["Comment"] = c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
    try:
        exif = im.getexif()
    except Exception:
        exif = None
    meta.orientation, meta.exif = _exif_reset(exif)
    meta.frames = int(getattr(im, "n_frames", 1) or 1)
    return meta


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 8
    return head[24]


def _read_pillow(path: str) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
    except UnidentifiedImageError as exc:
        raise ValueError(f"cannot read '{os.path.basename(path)}' as an image: {exc}") from exc
    with im:
        fmt = (im.format or "PNG").upper()
        meta = _pillow_meta(im, fmt)
        if meta.frames > 1:
            meta.notes.append(f"first of {meta.frames} frames read")
        if fmt == "PNG" and _png_bit_depth(path) == 16:
            pixels = _read_png16(path)
            meta.bit_depth = 16
        else:
            im.load()
            pixels, depth = _pillow_pixels(im, meta)
            meta.bit_depth = depth
    return _finish(pixels, meta)


def _read_png16(path: str) -> np.ndarray:
    import cv2

    buf = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("the 16-bit PNG could not be decoded")
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3]] if arr.shape[-1] == 4 else arr[..., ::-1]
    return np.ascontiguousarray(arr)


def _pillow_pixels(im, meta: ImageMeta) -> Tuple[np.ndarray, int]:
    """Raw integer/float array from a loaded Pillow image, and its bit depth."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "PA":
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "1":
        return np.asarray(im.convert("L")), 8
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im), 8
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), 16
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16), 16
        raise ValueError("32-bit integer pixels are not supported")
    if mode == "F":
        return np.asarray(im, np.float32), 32
    if mode == "CMYK":
        meta.notes.append("CMYK converted to RGB without colour management")
    else:
        meta.notes.append(f"Pillow mode {mode} converted to RGB")
    return np.asarray(im.convert("RGB")), 8


def _read_tiff(path: str) -> ImageData:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise ValueError(f"cannot read '{os.path.basename(path)}' as a TIFF: {exc}") from exc
    with tif:
        if not tif.pages:
            raise ValueError("the TIFF holds no image")
        page = tif.pages[0]
        meta = ImageMeta(format="TIFF")
        meta.frames = len(tif.pages)
        try:
            arr = page.asarray()
        except (ValueError, NotImplementedError, KeyError) as exc:
            if "imagecodecs" not in str(exc) and "not implemented" not in str(exc).lower():
                raise ValueError(f"cannot decode the TIFF: {exc}") from exc
            return _tiff_via_pillow(path, exc)
        photometric = int(page.photometric)
        tags = page.tags
        if int(getattr(page, "planarconfig", 1)) == 2 and arr.ndim == 3 and arr.shape[0] == page.samplesperpixel:
            arr = np.moveaxis(arr, 0, -1)
        if photometric not in (0, 1, 2):  # palette, CMYK, YCbCr, ...: Pillow converts those
            return _tiff_via_pillow(path, None)
        if photometric == 0:  # min-is-white
            arr = (np.iinfo(arr.dtype).max - arr) if np.issubdtype(arr.dtype, np.integer) else 1.0 - arr
        meta.icc_profile = page.iccprofile or None
        meta.orientation = int(tags["Orientation"].value) if "Orientation" in tags else 1
        if not 1 <= meta.orientation <= 8:
            meta.orientation = 1
        if "XResolution" in tags and "YResolution" in tags:
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
            xr, yr = (_rational(tags[t].value) for t in ("XResolution", "YResolution"))
            if xr > 0 and yr > 0 and unit in (2, 3):
                f = 2.54 if unit == 3 else 1.0
                meta.dpi = (xr * f, yr * f)
        for tag, key in (("ImageDescription", "Description"), ("Artist", "Artist"),
                         ("Copyright", "Copyright"), ("DateTime", "DateTime"), ("Software", "Software")):
            if tag in tags and isinstance(tags[tag].value, str) and tags[tag].value.strip():
                meta.text[key] = tags[tag].value
        if "XMP" in tags:
            v = tags["XMP"].value
            meta.xmp = bytes(v) if not isinstance(v, str) else v.encode("utf-8")
    if meta.frames > 1:
        meta.notes.append(f"first of {meta.frames} pages read")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        meta.bit_depth = 8
    elif arr.dtype == np.uint16:
        meta.bit_depth = 16
    elif np.issubdtype(arr.dtype, np.floating):
        meta.bit_depth, meta.float_samples = 32, True
        if arr.dtype == np.float16:
            meta.bit_depth = 16
    else:
        raise ValueError(f"TIFF sample type {arr.dtype} is not supported (8/16-bit unsigned or float)")
    return _finish(arr, meta)


def _rational(v) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        return float(v[0]) / float(v[1]) if v[1] else 0.0
    return float(v)


def _tiff_via_pillow(path: str, exc: Optional[Exception]) -> ImageData:
    """Pillow for TIFFs tifffile cannot decode here (LZW/JPEG without imagecodecs, palette, CMYK).

    Refuses where Pillow would lose depth (16-bit RGB): the message names imagecodecs."""
    from PIL import Image

    with Image.open(path) as im:
        deep_rgb = im.mode in ("RGB", "RGBA", "RGBX") and any(
            getattr(t, "args", None) and "16" in str(t.args) for t in getattr(im, "tile", []))
        if deep_rgb:
            raise ValueError(f"this TIFF ({exc}) holds 16-bit colour that only tifffile reads without losing "
                             f"depth: pip install imagecodecs")
    data = _read_pillow(path)
    data.meta.format = "TIFF"
    if exc is not None:
        data.meta.notes.append("decoded by Pillow (tifffile needs imagecodecs for this compression)")
    return data


def _read_exr(path: str) -> ImageData:
    try:
        import OpenEXR
    except ImportError as exc:
        raise ValueError("reading .exr needs the optional OpenEXR package: pip install OpenEXR "
                         "(or comfyui-restorekit[formats])") from exc
    f = OpenEXR.File(path, separate_channels=True)
    header = f.header()
    ch = {k: np.asarray(v.pixels) for k, v in f.channels().items()}
    meta = ImageMeta(format="EXR", float_samples=True, linear=True)
    names = set(ch)
    if {"R", "G", "B"} <= names:
        planes = [ch["R"], ch["G"], ch["B"]] + ([ch["A"]] if "A" in names else [])
    elif "Y" in names:
        planes = [ch["Y"]] + ([ch["A"]] if "A" in names else [])
        meta.grey = True
    else:
        raise ValueError(f"EXR channels {sorted(names)} hold no R,G,B or Y image")
    meta.bit_depth = 16 if planes[0].dtype == np.float16 else 32
    arr = np.stack([p.astype(np.float32) for p in planes], -1)
    for key in ("comments", "owner", "software"):
        if isinstance(header.get(key), str) and header[key]:
            meta.text[key.capitalize()] = header[key]
    return _finish(arr, meta)


def _finish(arr: np.ndarray, meta: ImageMeta) -> ImageData:
    """Raw array -> float32 0..1 ``[H,W,C]`` (C 1/3/4), orientation applied, meta completed."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or 0 in arr.shape:
        raise ValueError(f"unsupported image layout {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        peak = 65535.0 if arr.dtype == np.uint16 else 255.0
        px = arr.astype(np.float32) / np.float32(peak)
    else:
        px = arr.astype(np.float32)
        if not np.isfinite(px.sum(dtype=np.float64)):
            bad = int(np.count_nonzero(~np.isfinite(px)))
            raise ValueError(f"{bad} pixel value(s) are NaN or infinite")
        if meta.linear:
            from .colour import linear_to_srgb

            rgb = px[..., : 3 if px.shape[-1] >= 3 else 1]
            px = np.concatenate([np.asarray(linear_to_srgb(np.maximum(rgb, 0.0)), np.float32),
                                 px[..., rgb.shape[-1]:]], -1)
        lo, hi = float(px.min()), float(px.max())
        if lo < 0.0 or hi > 1.0:
            meta.notes.append(f"float values {lo:.4g}..{hi:.4g} clipped to 0..1")
            px = np.clip(px, 0.0, 1.0)
    c = px.shape[-1]
    if c == 2:  # grey + alpha -> RGBA with the grey replicated
        px = np.concatenate([np.repeat(px[..., :1], 3, -1), px[..., 1:]], -1)
        meta.grey = True
    elif c == 1:
        meta.grey = True
    meta.alpha = px.shape[-1] == 4
    px = apply_orientation(px, meta.orientation)
    return ImageData(np.ascontiguousarray(px, dtype=np.float32), meta)


def read_software(path: str) -> Optional[str]:
    """The ``Software`` a file records (PNG text, EXIF, TIFF tag, EXR attribute), or None.  Cheap:
    only the header is read."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as t:
                tag = t.pages[0].tags.get("Software") if t.pages else None
                return str(tag.value) if tag is not None else None
        if ext == ".exr":
            import OpenEXR

            return OpenEXR.File(path, header_only=True).header().get("software")
        from PIL import Image

        with Image.open(path) as im:
            if (im.format or "").upper() == "PNG" and im.info.get("Software"):
                return str(im.info["Software"])
            value = im.getexif().get(0x0131)
            return str(value) if value else None
    except Exception:
        return None


def is_restorekit_output(path: str) -> bool:
    """True when the file's ``Software`` metadata says RestoreKit wrote it."""
    sw = read_software(path)
    return bool(sw) and sw.startswith(SOFTWARE_PREFIX)


# --- writing -------------------------------------------------------------------------------------
def write_image(path: str, pixels, meta: Optional[ImageMeta] = None, *, bit_depth: Optional[int] = None,
                quality: int = DEFAULT_QUALITY, grey: str = "auto", overwrite: bool = True) -> WriteResult:
    """Write float pixels ``[H,W]`` / ``[H,W,C]`` (C = 1..4, 0..1) to ``path``; the extension picks
    the format.  Returns a :class:`WriteResult` whose ``notes`` say what had to change.

    ``meta``: the source's :class:`ImageMeta` (metadata to carry over; its bit depth is the default).
    ``bit_depth``: 8, 16 or 32 (float); a depth the format cannot store becomes the nearest one it
    can, with a note.  ``quality``: JPEG/WebP 1..100 (WebP 100 = lossless).  ``grey``: ``auto``
    (grey when the array has one channel, or the source was grey and the channels agree within one
    output step), ``yes`` or ``no``.  ``overwrite=False`` raises ``FileExistsError`` instead of
    replacing a file; the file appears atomically (written beside it, then moved into place).
    """
    path = os.fspath(path)
    fmt = format_of(path)
    if fmt == "GIF":
        raise ValueError("GIF output is not supported (palette only): use PNG")
    meta = meta or ImageMeta()
    notes: List[str] = []
    px = np.asarray(pixels, np.float32)
    if px.ndim == 2:
        px = px[..., None]
    if px.ndim != 3 or px.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"write_image expects [H, W, C] with C = 1..4, got {px.shape}")
    if not np.isfinite(px.sum(dtype=np.float64)):
        raise ValueError("write_image: the image contains NaN or infinite values")
    px = np.clip(px, 0.0, 1.0)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")

    depth = int(bit_depth or (meta.bit_depth if meta.float_samples or meta.bit_depth in (8, 16) else 8))
    if meta.float_samples and bit_depth is None and fmt not in ("TIFF", "EXR"):
        depth = 16 if fmt == "PNG" else 8
    if fmt == "EXR" and bit_depth is None and not meta.float_samples:
        depth = 32  # integer sources go to float32 (half keeps only 11 significant bits)
    allowed = WRITE_DEPTHS[fmt]
    if depth not in allowed:
        new = max(d for d in allowed if d <= depth) if any(d <= depth for d in allowed) else allowed[0]
        notes.append(f"{fmt} cannot store {depth}-bit samples: written as {new}-bit")
        depth = new

    colour, alpha = _split_channels(px)
    if alpha is not None and fmt not in ALPHA_FORMATS:
        notes.append(f"alpha channel dropped: {fmt} has none (use PNG, TIFF or WebP to keep it)")
        alpha = None
    is_grey = _decide_grey(colour, meta, depth, fmt, grey)
    if is_grey and colour.shape[-1] == 3:
        colour = colour.mean(axis=-1, keepdims=True)
    elif not is_grey and colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, -1)
    if meta.grey and not is_grey and grey == "auto":
        notes.append("the source was grey but the result has colour: written as RGB")

    out = colour if alpha is None else np.concatenate([colour, alpha], -1)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".rk-", suffix=ext, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; outputs get the usual permissions
    try:
        writer = {"PNG": _write_png, "JPEG": _write_pillow, "WEBP": _write_pillow, "BMP": _write_pillow,
                  "TIFF": _write_tiff, "EXR": _write_exr}[fmt]
        writer(tmp, out, depth, meta, fmt, int(quality), notes)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of replacing
            os.unlink(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return WriteResult(path, fmt, depth, bool(is_grey), notes)


def _split_channels(px: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    c = px.shape[-1]
    if c == 2:
        return px[..., :1], px[..., 1:]
    if c == 4:
        return px[..., :3], px[..., 3:]
    return px, None


def _decide_grey(colour: np.ndarray, meta: ImageMeta, depth: int, fmt: str, grey: str) -> bool:
    if grey not in ("auto", "yes", "no"):
        raise ValueError(f"grey must be auto, yes or no, got {grey!r}")
    if fmt == "WEBP":  # WebP has no grey mode
        return False
    if grey != "auto":
        return grey == "yes"
    if colour.shape[-1] == 1:
        return True
    if not meta.grey:
        return False
    step = 1e-6 if depth == 32 else 0.5 / (2 ** depth - 1)
    spread = float((colour.max(axis=-1) - colour.min(axis=-1)).max())
    return spread <= step


def _quantise(px: np.ndarray, depth: int) -> np.ndarray:
    if depth == 8:
        return np.round(px * 255.0).astype(np.uint8)
    if depth == 16:
        return np.round(px * 65535.0).astype(np.uint16)
    return px.astype(np.float32)


def _exif_for_output(meta: ImageMeta):
    """A Pillow Exif object: the source's EXIF (orientation already 1) with our Software tag."""
    from PIL import Image

    exif = Image.Exif()
    if meta.exif:
        try:
            exif.load(meta.exif)
        except Exception:
            exif = Image.Exif()
    exif[0x0131] = SOFTWARE
    if 274 in exif:
        exif[274] = 1
    return exif


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_text_chunk(key: str, value: str) -> bytes:
    k = key.encode("latin-1", "replace")[:79]
    try:
        return _png_chunk(b"tEXt", k + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # iTXt: keyword, compression flag/method, language, translated keyword
        return _png_chunk(b"iTXt", k + b"\0\0\0\0\0" + value.encode("utf-8"))


def _write_png(path, arr, depth, meta, fmt, quality, notes) -> None:
    import cv2

    q = _quantise(arr, depth)
    c = q.shape[-1]
    if c == 2:
        if depth == 8:
            from PIL import Image

            Image.fromarray(q, "LA").save(path, compress_level=6)
            with open(path, "rb") as f:
                data = f.read()
            return _png_add_chunks(path, data, meta)
        q = np.concatenate([np.repeat(q[..., :1], 3, -1), q[..., 1:]], -1)
        notes.append("16-bit grey+alpha written as RGBA (the PNG encoder has no 16-bit LA)")
        c = 4
    bgr = q[..., 0] if c == 1 else (q[..., [2, 1, 0]] if c == 3 else q[..., [2, 1, 0, 3]])
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    _png_add_chunks(path, buf.tobytes(), meta)


def _png_add_chunks(path: str, data: bytes, meta: ImageMeta) -> None:
    """Write ``data`` (a PNG stream) with our metadata chunks inserted after IHDR; ancillary chunks
    the encoder wrote that we replace (text, iCCP, sRGB, gAMA, pHYs, eXIf) are dropped."""
    sig, pos = data[:8], 8
    chunks = []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        chunks.append((kind, data[pos:pos + 12 + n]))
        pos += 12 + n
    extra = []
    if meta.icc_profile:
        extra.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(meta.icc_profile)))
    if meta.dpi:
        ppm = [max(1, int(round(d / 0.0254))) for d in meta.dpi]
        extra.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    exif = _exif_for_output(meta).tobytes()
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    extra.append(_png_chunk(b"eXIf", exif))
    text = dict(meta.text)
    text["Software"] = SOFTWARE
    for key, value in text.items():
        extra.append(_png_text_chunk(key, value))
    if meta.xmp:
        extra.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + meta.xmp))
    drop = {b"tEXt", b"iTXt", b"zTXt", b"iCCP", b"sRGB", b"gAMA", b"pHYs", b"eXIf"}
    body = [raw for kind, raw in chunks if kind not in drop]
    with open(path, "wb") as f:
        f.write(sig + body[0] + b"".join(extra) + b"".join(body[1:]))


def _write_pillow(path, arr, depth, meta, fmt, quality, notes) -> None:
    from PIL import Image

    q = _quantise(arr, 8)
    c = q.shape[-1]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    if fmt == "BMP" and c == 2:
        q, mode = np.concatenate([np.repeat(q[..., :1], 3, -1), q[..., 1:]], -1), "RGBA"
    im = Image.fromarray(q[..., 0] if mode == "L" else q, mode)
    kw = {}
    if fmt in ("JPEG", "WEBP"):
        kw["exif"] = _exif_for_output(meta)
        if meta.icc_profile:
            kw["icc_profile"] = meta.icc_profile
        if meta.xmp:
            kw["xmp"] = meta.xmp
    if fmt == "JPEG":
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
        if meta.text.get("Comment"):
            kw["comment"] = meta.text["Comment"].encode("utf-8")
    if fmt == "WEBP":
        kw.update(quality=quality, lossless=quality >= 100, method=4)
    if meta.dpi and fmt in ("JPEG", "BMP"):
        kw["dpi"] = tuple(int(round(d)) for d in meta.dpi)
    if fmt == "BMP" and (meta.icc_profile or meta.exif):
        notes.append("BMP holds no ICC profile or EXIF: not carried over")
    try:
        im.save(path, format=fmt, **kw)
    except OSError:
        if not kw.get("optimize"):
            raise
        # Pillow sizes libjpeg's buffer for an optimised JPEG at 1-2 bytes per pixel; content that
        # hardly compresses (noise at quality >= 90, no chroma subsampling) needs more and libjpeg
        # stops with "Suspension not allowed here": write it with the standard Huffman tables
        kw["optimize"] = False
        im.save(path, format=fmt, **kw)
        notes.append("JPEG written without Huffman-table optimisation (the content hardly compresses)")


def _write_tiff(path, arr, depth, meta, fmt, quality, notes) -> None:
    import tifffile

    q = _quantise(arr, depth)
    c = q.shape[-1]
    photometric = "minisblack" if c in (1, 2) else "rgb"
    extratags = []
    for key, code in (("Artist", 315), ("Copyright", 33432)):
        if meta.text.get(key):
            extratags.append((code, "s", 0, meta.text[key], True))
    if meta.xmp:
        extratags.append((700, "B", len(meta.xmp), meta.xmp, True))
    kw = dict(photometric=photometric, compression="zlib", predictor=depth != 32, metadata=None,
              software=SOFTWARE, extratags=extratags)
    if c in (2, 4):
        kw["extrasamples"] = ("unassalpha",)
    if meta.icc_profile:
        kw["iccprofile"] = meta.icc_profile
    if meta.dpi:
        kw.update(resolution=meta.dpi, resolutionunit="INCH")
    if meta.text.get("Description"):
        kw["description"] = meta.text["Description"]
    if meta.text.get("DateTime"):
        kw["datetime"] = meta.text["DateTime"]
    if meta.exif and len(meta.exif) > 16:
        notes.append("EXIF block not written into TIFF (ICC, resolution and descriptive tags are)")
    tifffile.imwrite(path, q[..., 0] if c == 1 else q, **kw)


def _write_exr(path, arr, depth, meta, fmt, quality, notes) -> None:
    try:
        import OpenEXR
    except ImportError as exc:
        raise ValueError("writing .exr needs the optional OpenEXR package: pip install OpenEXR "
                         "(or comfyui-restorekit[formats])") from exc
    from .colour import srgb_to_linear

    c = arr.shape[-1]
    n = 1 if c in (1, 2) else 3
    lin = np.asarray(srgb_to_linear(arr[..., :n]), np.float32)
    dtype = np.float16 if depth == 16 else np.float32
    names = ["Y"] if n == 1 else ["R", "G", "B"]
    channels = {k: np.ascontiguousarray(lin[..., i]).astype(dtype) for i, k in enumerate(names)}
    if c in (2, 4):
        channels["A"] = np.ascontiguousarray(arr[..., -1]).astype(dtype)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, "software": SOFTWARE}
    comment = meta.text.get("Comments") or meta.text.get("Description")
    if comment:
        header["comments"] = comment
    if meta.icc_profile:
        notes.append("EXR holds no ICC profile: not carried over")
    OpenEXR.File(header, channels).write(path)
