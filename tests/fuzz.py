"""Property-based fuzzing of every RestoreKit node over its declared input space (issue 13).

A seeded generator of our own (no extra dependency) reads each node's ``INPUT_TYPES`` -- so a new
node is fuzzed the day it is registered -- and draws:

* IMAGE inputs: 1x1 up to a few thousand px on one side (e.g. 3000x17) within a pixel budget,
  batches 1-4, 1/3/4 channels, float16/32/64, contiguous or non-contiguous views (transposed,
  strided, channel slices, batch or channel ``expand`` with stride 0, rank 3), contents from noise
  to flat black frames and 8-bit-quantised gradients, values in 0..1, in 8/16-bit ranges, slightly
  or hugely out of range, with NaN or inf; now and then a malformed tensor (2/5 channels, rank 2/5,
  an empty side).  MASK inputs likewise; other socket types (a PSF, a loaded model) come from the
  node in the pack that produces them.
* widgets: INT/FLOAT at their declared min, max, default or a random value between (on the step
  grid), every COMBO choice, BOOLEAN both ways, STRING default or junk; optional inputs sometimes
  left out.  Model nodes choose among small random-weight checkpoints written for the run (as
  tests/_workflows.py does for the examples) and a corrupt file.

Every call is checked against the contract (the *checks*):

``crash``        an exception that is not one of the pack's clear errors (see :func:`is_clear_error`):
                 a ValueError, FileNotFoundError or RuntimeError raised by a ``raise`` statement in
                 the pack's own code, or an exception class the pack defines.  cv2.error, torch's
                 padding errors, ZeroDivisionError, IndexError, numpy's MemoryError ... are crashes.
``violation``    outputs: IMAGE float32 ``[B,H,W,C]``, C in 1/3/4, the input's batch, the input's size
                 (except the nodes in :data:`RESIZING_NODES`, which must keep the aspect), finite and
                 in 0..1; alpha by the one rule (:func:`expected_alphas`); STRING info without "nan" or
                 "inf"; NaN/inf or malformed input refused, not processed; inputs never changed in
                 place; cached models (any torch module reachable from a pack cache) unchanged
                 (state-dict hash before/after).
``hidden-nan``   ``nan_to_num`` called from pack code on values that were not finite while every
                 input was finite (a NaN made inside a node and hidden), or a clear error whose
                 message reports a NaN/inf the input did not have.

Failures listed in :data:`KNOWN` (keyed by node + condition, each with the issue that owns it) are
counted as ``known``, not hidden and not failing.

Usage (repository root)::

    python -m tests.fuzz --cases 20000                 # the long profile (about an hour on 2 cores)
    python -m tests.fuzz --cases 300 --profile quick   # what tests/test_fuzz_quick.py runs
    python -m tests.fuzz --node RestoreKitSmartSharpen --case-seed 123   # reproduce one case

It prints the counts (cases, ok, refused, crashes, contract violations, hidden NaNs, known) and one
reproducer line per failure: node, inputs, case seed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import linecache
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
import weakref
import zlib
from collections import Counter, defaultdict
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _workflows as W  # noqa: E402  (tests/ helpers: pack loading, input specs, model makers)


# --- profiles -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    max_pixels: int      # pixel budget per image (H*W) before the per-node cost divides it
    max_side: int        # longest side drawn
    max_batch: int


PROFILES = {
    "quick": Profile("quick", max_pixels=4096, max_side=3000, max_batch=3),
    "long": Profile("long", max_pixels=1 << 17, max_side=3000, max_batch=4),
}

#: nodes that change the image size on purpose (the aspect ratio is still checked)
RESIZING_NODES = {"RestoreKitRealESRGAN", "RestoreKitRestoreWithModel"}


def node_cost(node: str, kw: Dict[str, Any]) -> float:
    """How much more a pixel costs in ``node`` with widgets ``kw`` than in a cheap filter.

    The pixel budget is divided by this, so the long profile stays about an hour: the extremes are
    always tried, on smaller images where they are expensive.  Unknown nodes cost 1.
    """
    c = {"RestoreKitSCUNet": 8.0, "RestoreKitRealESRGAN": 8.0, "RestoreKitRestoreWithModel": 8.0,
         "RestoreKitNoiseDA": 4.0, "RestoreKitSFHformer": 4.0, "RestoreKitHybridRestore": 4.0,
         "RestoreKitDamageAnalysis": 2.0, "RestoreKitFilmGrainBM3D": 4.0, "RestoreKitDenoise": 2.0,
         "RestoreKitRetinex": 2.0,
         # the motion estimate needs 32 px and a kernel (up to 256 px) inside the image: larger images
         "RestoreKitMotionDeblur": 0.25}.get(node, 1.0)
    if "iterations" in kw and kw.get("method") == "richardson_lucy":
        c *= max(1.0, float(kw["iterations"]) / 30.0)
    if kw.get("output_scale"):
        c *= max(1.0, float(kw["output_scale"]) ** 2 / 16.0)
    return c


def limit_widgets(node: str, kw: Dict[str, Any], profile: "Profile") -> Dict[str, str]:
    """Quick profile only: bound widget combinations whose cost does not depend on an image (the PSF
    stack: size² x z planes) so the CI run stays short; the long profile tries every extreme.
    Returns what was changed (shown in the case description)."""
    changed = {}
    if profile.name == "quick" and node == "RestoreKitPSF" and "size" in kw and "z_planes" in kw:
        while kw["size"] ** 2 * kw["z_planes"] > 2_000_000 and kw["z_planes"] > 1:
            kw["z_planes"] = max(1, kw["z_planes"] // 2)
            changed["z_planes"] = repr(kw["z_planes"]) + " (quick profile cap)"
    return changed


# --- the pack -----------------------------------------------------------------------------------
def pack():
    return W.load_pack()


def node_classes() -> Dict[str, Any]:
    return dict(pack().NODE_CLASS_MAPPINGS)


MODEL_FILES = {
    "upscale_models": {"RealESRGAN_x4plus.pth": "esrgan", "RealESRGAN_x2plus.pth": "esrgan_x2",
                       "realesr-general-x4v3.pth": "compact", "realesr-general-wdn-x4v3.pth": "compact",
                       "scunet_color_real_psnr.pth": "scunet"},
    "restorekit": {"sfhformer_haze_ots.pth": "sfhformer", "sfhformer_haze_its.pth": "sfhformer",
                   "sfhformer_11211_lolv2s.pth": "sfhformer_lol", "noise_da_denoise.pth": "noise_da"},
}


def _write_models(root: str) -> Dict[str, str]:
    """The model files of :data:`MODEL_FILES`, two ncnn pairs and a corrupt file per folder."""
    folders = {}
    for kind, names in MODEL_FILES.items():
        folder = os.path.join(root, kind)
        os.makedirs(folder, exist_ok=True)
        for name, arch in names.items():
            if not os.path.exists(os.path.join(folder, name)):
                W.MODEL_MAKERS[arch](os.path.join(folder, name))
        corrupt = os.path.join(folder, "corrupt.pth")
        if not os.path.exists(corrupt):
            with open(corrupt, "wb") as f:
                f.write(np.random.default_rng(0).bytes(3000))
        folders[kind] = folder
    try:  # ncnn .param/.bin pairs (the ncnn runtime of scripts/inference), when this version has it
        import _ncnn_graphs as G

        up = folders["upscale_models"]
        if not os.path.exists(os.path.join(up, "compact-x2.param")):
            G.write_compact(up, storage="fp16", stem="compact-x2")
            G.write_waifu2x(up, stem="upconv7")
    except ImportError:
        pass
    return folders


def _write_input_images(folder: str) -> None:
    """Files for image-loading nodes: 8/16-bit, grey, RGBA, float TIFF, JPEG, 1x1, a broken file."""
    import importlib

    io = importlib.import_module(pack().__name__ + ".scripts.image_io")
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:37, 0:53] / 53.0
    rgb = np.stack([yy, xx, 0.5 * (yy + xx)], -1).astype(np.float32)
    for name, px, depth in (("rgb8.png", rgb, 8), ("rgb16.png", rgb, 16), ("grey16.png", rgb[..., :1], 16),
                            ("rgba.png", np.concatenate([rgb, rng.random((37, 53, 1), np.float32)], -1), 8),
                            ("float.tiff", rgb * 1.0, 32), ("photo.jpg", rgb, 8), ("one.png", rgb[:1, :1], 8)):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            io.write_image(path, px, bit_depth=depth)
    with open(os.path.join(folder, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))


@contextlib.contextmanager
def environment(root: Optional[str] = None):
    """What the nodes need from the host, in a temporary folder for the duration: small random-weight
    checkpoints as the only model folders, and input/output/temp image folders (restored afterwards;
    the zoo cache is cleared on both ends).  Yields the model folders."""
    import importlib

    p = pack()
    runtime = importlib.import_module(p.__name__ + ".scripts.inference.runtime").get_runtime()
    zoo = importlib.import_module(p.__name__ + ".scripts.inference.zoo")
    own = root is None
    root = root or tempfile.mkdtemp(prefix="restorekit-fuzz-")
    folders = _write_models(root)
    saved = runtime.__dict__.get("model_folders")
    runtime.model_folders = lambda kind: [folders[kind]] if kind in folders else []
    zoo.clear_cache()
    images = contextlib.nullcontext()
    if hasattr(runtime, "image_folders"):  # the image I/O nodes read and write there
        _write_input_images(os.path.join(root, "input"))
        images = runtime.image_folders(**{k: os.path.join(root, k) for k in ("input", "output", "temp")})
    try:
        with images:
            yield folders
    finally:
        if saved is None:
            runtime.__dict__.pop("model_folders", None)
        else:
            runtime.model_folders = saved
        zoo.clear_cache()
        if own:
            shutil.rmtree(root, ignore_errors=True)


# --- cases ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    node: str
    seed: int
    profile: str
    kwargs: Dict[str, Any]
    desc: Dict[str, str]                 # input name -> human-readable description
    finite: bool = True                  # every tensor input finite
    finite_widgets: bool = True          # no widget value spells nan/inf
    well_formed: bool = True             # every tensor input of a valid rank/channel count/size
    in_range: bool = True                # every tensor input within 0..1
    primary: Optional[str] = None        # the first IMAGE input (geometry, alpha source)
    batch: int = 1                       # expected output batch
    meta: Dict[str, dict] = dataclasses.field(default_factory=dict)

    def reproducer(self) -> str:
        return f"python -m tests.fuzz --profile {self.profile} --node {self.node} --case-seed {self.seed}"

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.desc.items())


CONTENTS = ("noise", "gradient", "quantised", "constant", "black", "white", "edges", "natural",
            "impulse", "binary")
RANGES = (("unit", 0.70), ("u8", 0.07), ("u16", 0.04), ("over", 0.07), ("huge", 0.03), ("nan", 0.05),
          ("inf", 0.04))
DTYPES = (("float32", 0.7), ("float16", 0.15), ("float64", 0.15))
LAYOUTS = ("contiguous", "contiguous", "contiguous", "transposed", "strided", "channel-slice",
           "batch-expand", "channel-expand", "rank3")


def _pick(rng, weighted):
    names = [n for n, _ in weighted]
    p = np.array([w for _, w in weighted], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def draw_size(rng, budget: int, max_side: int) -> Tuple[int, int]:
    """(H, W): tiny, small, medium, skinny (one side 1-24 px, the other up to ``max_side``) or odd."""
    budget = max(1, int(budget))
    kind = rng.random()
    if kind < 0.15:
        h, w = rng.integers(1, 9, size=2)
    elif kind < 0.45:
        h, w = rng.integers(8, 65, size=2)
    elif kind < 0.65:
        s = max(2, int(math.sqrt(budget)))
        h, w = rng.integers(max(1, s // 4), s + 1, size=2)
    elif kind < 0.85:
        short = int(rng.integers(1, 25))
        long_ = int(min(max_side, max(1, budget // short)))
        long_ = int(rng.integers(max(1, long_ // 2), long_ + 1))
        h, w = (short, long_) if rng.random() < 0.5 else (long_, short)
    else:
        odd = [1, 2, 3, 5, 7, 9, 15, 17, 31, 33, 63, 65, 97, 127, 129, 255, 257]
        h, w = rng.choice(odd), rng.choice(odd)
    h, w = int(h), int(w)
    while h * w > budget and max(h, w) > 1:  # shrink the longer side first
        if h >= w:
            h = max(1, h // 2)
        else:
            w = max(1, w // 2)
    return h, w


def _content(rng, kind: str, b: int, h: int, w: int, c: int) -> np.ndarray:
    """float64 [b,h,w,c] in 0..1."""
    if kind == "noise":
        return rng.random((b, h, w, c))
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    if kind in ("gradient", "quantised"):
        out = np.empty((b, h, w, c))
        for i in range(b):
            for j in range(c):
                a, bb = rng.uniform(-1, 1, size=2)
                g = a * yy + bb * xx
                g = (g - g.min()) / max(g.max() - g.min(), 1e-12) if g.max() > g.min() else g * 0 + rng.random()
                out[i, :, :, j] = g * rng.uniform(0.2, 1.0) + rng.uniform(0, 0.2)
        out = np.clip(out, 0, 1)
        return np.round(out * 255) / 255 if kind == "quantised" else out
    if kind == "constant":
        return np.full((b, h, w, c), float(rng.choice([0.0, 1.0, 0.5, rng.random()])))
    if kind == "black":
        return np.zeros((b, h, w, c))
    if kind == "white":
        return np.ones((b, h, w, c))
    if kind == "edges":
        out = np.full((b, h, w, c), rng.random())
        for _ in range(int(rng.integers(1, 6))):
            y0, y1 = sorted(rng.integers(0, h + 1, size=2))
            x0, x1 = sorted(rng.integers(0, w + 1, size=2))
            out[:, y0:y1, x0:x1, :] = rng.random(c)
        return np.clip(out + rng.normal(0, rng.choice([0, 0.01, 0.05]), out.shape), 0, 1)
    if kind == "natural":
        from scipy.ndimage import gaussian_filter

        base = rng.random((b, h, w, c))
        out = sum(gaussian_filter(base, (0, s, s, 0), mode="reflect") * wgt for s, wgt in ((1, 0.3), (4, 0.7)))
        out = (out - out.min()) / max(out.max() - out.min(), 1e-12)
        return np.clip(out + rng.normal(0, 0.03, out.shape), 0, 1)
    if kind == "impulse":
        out = np.zeros((b, h, w, c))
        n = max(1, (h * w) // 50)
        out[:, rng.integers(0, h, n), rng.integers(0, w, n), :] = 1.0
        return out
    return (rng.random((b, h, w, c)) < 0.5).astype(np.float64)  # binary


def _apply_range(rng, x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "u8":
        return np.round(x * 255.0)
    if kind == "u16":
        return np.round(x * 65535.0)
    if kind == "over":
        return x * 1.6 - 0.3
    if kind == "huge":
        return (x - 0.5) * float(rng.choice([1e4, 1e6, 1e30]))
    if kind in ("nan", "inf"):
        x = x.copy()
        flat = x.reshape(-1)
        n = max(1, int(flat.size * float(rng.choice([0.0, 0.01, 1.0]))))
        idx = rng.choice(flat.size, size=min(n, flat.size), replace=False)
        flat[idx] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf], size=idx.size)
        return x
    return x


def draw_image(rng, h: int, w: int, b: int, c: int, allow_bad: bool = True, rank3_ok: bool = True):
    """A ComfyUI-style IMAGE tensor and its description/meta."""
    import torch

    meta = {"well_formed": True}
    shape_kind = "ok"
    if allow_bad and rng.random() < 0.04:
        shape_kind = str(rng.choice(["channels", "rank2", "rank5", "empty"]))
    content = str(rng.choice(CONTENTS))
    rkind = _pick(rng, RANGES)
    dtype = _pick(rng, DTYPES)
    layout = str(rng.choice(LAYOUTS))
    if c == 4:
        rgb = _content(rng, content, b, h, w, 3)
        alpha = _content(rng, str(rng.choice(["constant", "binary", "gradient", "noise", "white"])), b, h, w, 1)
        x = np.concatenate([rgb, alpha], axis=-1)
    else:
        x = _content(rng, content, b, h, w, c)
    if layout == "batch-expand" and b > 1:
        x = np.repeat(x[:1], b, axis=0)
    if layout == "channel-expand" and c == 3:
        x = np.repeat(x[..., :1], 3, axis=-1)
    x = _apply_range(rng, x, rkind)
    tdt = getattr(torch, dtype)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(tdt)

    if layout == "transposed":
        img = t(np.swapaxes(x, 1, 2)).permute(0, 2, 1, 3)
    elif layout == "strided":
        big = np.zeros((b, h, 2 * w, c))
        big[:, :, ::2] = x
        img = t(big)[:, :, ::2]
    elif layout == "channel-slice":
        img = t(np.concatenate([x, np.zeros((b, h, w, 1))], axis=-1))[..., :c]
    elif layout == "batch-expand" and b > 1:
        img = t(x[:1]).expand(b, h, w, c)
    elif layout == "channel-expand" and c == 3:
        img = t(x[..., :1]).expand(b, h, w, 3)
    elif layout == "rank3" and b == 1 and rank3_ok:
        img = t(x[0])
    else:
        layout = "contiguous"
        img = t(x)
    if shape_kind == "channels":
        img = t(np.concatenate([x, x], axis=-1)[..., : int(rng.choice([2, 5]))])
        meta["well_formed"] = False
    elif shape_kind == "rank2":
        img = t(x[0, :, :, 0])
        meta["well_formed"] = False
    elif shape_kind == "rank5":
        img = t(x[None])
        meta["well_formed"] = False
    elif shape_kind == "empty":
        img = t(x[:, :0])
        meta["well_formed"] = False
    meta["finite"] = bool(torch.isfinite(img).all())
    meta["in_range"] = bool(meta["finite"] and img.numel() > 0 and float(img.min()) >= 0 and float(img.max()) <= 1)
    meta["shape"] = tuple(img.shape)
    shown = "x".join(map(str, img.shape))
    desc = f"{dtype}[{shown}] {layout} {content} {rkind}" + ("" if shape_kind == "ok" else f" BAD:{shape_kind}")
    return img, desc, meta


def draw_mask(rng, h: int, w: int, b: int):
    import torch

    kind = str(rng.choice(["binary", "constant", "noise", "gradient"]))
    mb = int(rng.choice([1, b]))
    mh, mw = (h, w) if rng.random() < 0.85 else (max(1, h // 2), max(1, w + 3))
    m = _content(rng, kind, mb, mh, mw, 1)[..., 0]
    t = torch.from_numpy(m.astype(np.float32))
    if mb == 1 and rng.random() < 0.3:
        t = t[0]
    return t, f"mask[{'x'.join(map(str, t.shape))}] {kind}"


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _fitting_files(node: str, choices) -> List[str]:
    """Model-file choices whose name shares the node's family name (RestoreKitSCUNet -> scunet...)."""
    key = _squash(node.replace("RestoreKit", ""))[:6]
    return [c for c in choices if isinstance(c, str) and "." in c and key and key in _squash(c)]


def draw_widget(rng, spec, node: str = "") -> Any:
    o = spec.options
    if spec.type == "BOOLEAN":
        return bool(rng.random() < 0.5)
    if spec.type == "COMBO":
        if not spec.choices:
            return None
        fitting = _fitting_files(node, spec.choices) if node else []
        if fitting and rng.random() < 0.75:  # a model file named for this node, most of the time
            return fitting[int(rng.integers(len(fitting)))]
        return spec.choices[int(rng.integers(len(spec.choices)))]
    if spec.type == "STRING":
        if rng.random() < 0.6:
            return o.get("default", "")
        junk = ["", " ", "abc", "0", "-5", "1e9", "nan", "inf", ",,,", "1;2;3", "0.5, 2, 1000",
                ", ".join(f"{v:.3g}" for v in rng.uniform(0.1, 300, size=int(rng.integers(1, 6))))]
        return junk[int(rng.integers(len(junk)))]
    lo, hi = o.get("min", 0), o.get("max", 100)
    is_int = spec.type == "INT"
    step = int(o.get("step", 1) or 1) if is_int else float(o.get("step", 0.01) or 0.01)
    # min, max, default, just above the minimum (e.g. radius 0.1), or on the step grid between
    r = rng.random()
    if r < 0.6:
        v = lo if r < 0.25 else hi if r < 0.5 else o.get("default", lo)
    elif r < 0.7:
        v = min(hi, lo + step)
    elif is_int:
        v = lo + step * int(rng.integers(0, (hi - lo) // step + 1))
    else:
        v = float(np.clip(round(lo + step * round(float(rng.uniform(0, (hi - lo) / step))), 6), lo, hi))
    return int(v) if is_int else float(v)


def _seed_for(node: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, zlib.crc32(node.encode())])


_PRODUCED: Dict[Tuple[str, str], Any] = {}


def produce(socket_type: str, rng, classes) -> Tuple[Any, str]:
    """A value of a socket type (not IMAGE/MASK) from the first pack node that returns it, called
    with its defaults and a random choice for each COMBO (up to 8 draws until one is accepted);
    cached per (type, choices)."""
    why = f"no node produces {socket_type}"
    for name, cls in sorted(classes.items()):
        rtypes = list(getattr(cls, "RETURN_TYPES", ()))
        if socket_type not in rtypes:
            continue
        for _attempt in range(8):
            kw = {}
            for s in W.input_specs(cls):
                if s.type == "COMBO" and s.choices:
                    kw[s.name] = s.choices[int(rng.integers(len(s.choices)))]
                elif "default" in s.options:
                    kw[s.name] = s.options["default"]
            key = (socket_type, repr(sorted(kw.items())))
            if key not in _PRODUCED:
                try:
                    ret = getattr(cls(), cls.FUNCTION)(**kw)
                except Exception as exc:  # a producer that refuses: draw again
                    _PRODUCED[key] = (None, f"{name} refused: {exc}")
                else:
                    ret = ret["result"] if isinstance(ret, dict) else ret
                    _PRODUCED[key] = (ret[rtypes.index(socket_type)], f"{socket_type} from {name}({kw})")
            if _PRODUCED[key][0] is not None:
                return _PRODUCED[key]
            why = _PRODUCED[key][1]
    return None, why


def make_case(node: str, seed: int, profile: Profile, classes=None) -> Case:
    classes = classes or node_classes()
    cls = classes[node]
    rng = _seed_for(node, seed)
    specs = W.input_specs(cls)
    case = Case(node, seed, profile.name, {}, {})
    # widgets first: the pixel budget depends on them
    for s in specs:
        if s.type in W.WIDGET_TYPES and not s.options.get("forceInput"):
            if not s.required and rng.random() < 0.3:
                continue
            v = draw_widget(rng, s, node)
            if v is None:
                continue
            case.kwargs[s.name] = v
            case.desc[s.name] = repr(v)
            if isinstance(v, str) and mentions_nonfinite(v):
                case.finite_widgets = False
    case.desc.update(limit_widgets(node, case.kwargs, profile))
    budget = profile.max_pixels / node_cost(node, case.kwargs)
    b = int(rng.integers(1, profile.max_batch + 1)) if rng.random() < 0.4 else 1
    h, w = draw_size(rng, budget / b, profile.max_side)
    c0 = int(rng.choice([3, 3, 1, 4]))
    for s in specs:
        if s.type == "IMAGE":
            if case.primary is None:
                case.primary, bb, hh, ww, cc = s.name, b, h, w, c0
                case.batch = b
            else:  # secondary images: same size mostly, batch 1 or the same
                bb = int(rng.choice([1, b]))
                hh, ww = (h, w) if rng.random() < 0.9 else draw_size(rng, budget, profile.max_side)
                cc = int(rng.choice([3, 1, 4]))
                if (hh, ww) != (h, w):
                    case.meta.setdefault("_mismatch", {})
            img, desc, meta = draw_image(rng, hh, ww, bb, cc)
            case.kwargs[s.name], case.desc[s.name] = img, desc
            case.meta[s.name] = meta
            case.finite &= meta["finite"]
            case.well_formed &= meta["well_formed"]
            case.in_range &= meta["in_range"]
        elif s.type == "MASK":
            if not s.required and rng.random() < 0.4:
                continue
            m, desc = draw_mask(rng, h, w, b)
            case.kwargs[s.name], case.desc[s.name] = m, desc
        elif s.type not in W.WIDGET_TYPES:
            if not s.required and rng.random() < 0.5:
                continue
            v, desc = produce(s.type, rng, classes)
            if v is None:
                if s.required:
                    case.desc[s.name] = desc
                    case.meta["_unavailable"] = {"why": desc}
                continue
            case.kwargs[s.name], case.desc[s.name] = v, desc
    if case.primary is not None:
        batches = [m["shape"][0] for k, m in case.meta.items() if not k.startswith("_") and len(m["shape"]) == 4]
        case.batch = max(batches) if batches else 1
    return case


# --- checks --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Failure:
    kind: str          # crash | violation | hidden-nan
    check: str         # exception type, or the contract check that failed
    message: str
    where: str = ""

    def line(self) -> str:
        return f"{self.kind}/{self.check}: {self.message}" + (f" [{self.where}]" if self.where else "")


def _pack_file(path: str) -> bool:
    p = os.path.realpath(path)
    return p.startswith(os.path.realpath(REPO) + os.sep) and os.sep + "tests" + os.sep not in p[len(REPO):] \
        and ".venv" not in p and "site-packages" not in p


def _innermost(tb):
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last


def is_clear_error(exc: BaseException) -> Tuple[bool, str]:
    """(clear, where): the pack's clear errors are exception classes the pack defines, and
    ValueError / FileNotFoundError / RuntimeError raised by a ``raise`` statement in the pack's own
    code with a message of at least a few words.  Anything raised inside numpy, torch, OpenCV,
    SciPy ... or of another type (IndexError, ZeroDivisionError, TypeError, KeyError, numpy's
    MemoryError) is foreign."""
    last = _innermost(exc.__traceback__)
    where = ""
    if last is not None:
        where = f"{os.path.relpath(last.tb_frame.f_code.co_filename, REPO)}:{last.tb_lineno}"
    t = type(exc)
    msg = str(exc).strip()
    if t.__module__.split(".")[0] == pack().__name__ and len(msg) >= 10:
        return True, where
    if not isinstance(exc, (ValueError, FileNotFoundError, RuntimeError)) or len(msg) < 10:
        return False, where
    if last is None or not _pack_file(last.tb_frame.f_code.co_filename):
        return False, where
    line = linecache.getline(last.tb_frame.f_code.co_filename, last.tb_lineno).strip()
    return line.startswith("raise"), where


_NONFINITE_WORD = re.compile(r"(?<![A-Za-z])[-+]?(nan|inf)(?![A-Za-z])", re.IGNORECASE)


def mentions_nonfinite(text: str) -> bool:
    return bool(_NONFINITE_WORD.search(text or ""))


def normalise_like_pack(x) -> "torch.Tensor":  # noqa: F821
    """The one range rule for a node's IMAGE input, as the fuzz suite expects it: float32; when the
    maximum is above 1 the whole tensor is 8-bit (max <= 255) or 16-bit data and is scaled by 1/255 or
    1/65535; then clipped to 0..1."""
    import torch

    x = x.to(torch.float32)
    if x.dim() == 3:
        x = x[None]
    mx = float(x.max())
    if mx > 1.0 + 1e-3:
        x = x / (255.0 if mx <= 255.0 + 1e-3 else 65535.0)
    return x.clamp(0.0, 1.0)


def expected_alphas(image) -> List["torch.Tensor"]:  # noqa: F821
    """The alpha rule (scripts/batch.py): alpha is never processed; it gets the range handling the
    colour channels get -- the 8/16-bit reading of :func:`normalise_like_pack` where the node reads
    values that way, none where the node leaves the range to its library -- is clipped to 0..1 and
    otherwise passed through unchanged.  Returns both candidates ``[B,H,W,1]``."""
    import torch

    x = image.to(torch.float32)
    x = x[None] if x.dim() == 3 else x
    return [normalise_like_pack(image)[..., 3:4], x[..., 3:4].clamp(0.0, 1.0)]


class NanSpy:
    """Records calls of ``nan_to_num`` (numpy, torch, Tensor methods) made from pack code on values
    that are not all finite: a NaN/inf made inside a node and replaced there."""

    def __init__(self):
        self.hits: List[str] = []
        self._saved = []

    def _wrap(self, owner, name, fn, is_torch):
        spy = self

        def wrapper(x, *a, **k):
            try:
                frame = sys._getframe(1)
                if _pack_file(frame.f_code.co_filename):
                    if is_torch:
                        import torch

                        bad = isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all())
                    else:
                        arr = np.asarray(x)
                        bad = arr.dtype.kind in "fc" and not bool(np.isfinite(arr).all())
                    if bad:
                        spy.hits.append(f"{os.path.relpath(frame.f_code.co_filename, REPO)}:{frame.f_lineno}")
            except Exception:  # the spy must never change behaviour
                pass
            return fn(x, *a, **k)

        return wrapper

    def __enter__(self):
        import torch

        targets = [(np, "nan_to_num", False), (torch, "nan_to_num", True), (torch.Tensor, "nan_to_num", True),
                   (torch.Tensor, "nan_to_num_", True)]
        for owner, name, is_torch in targets:
            fn = getattr(owner, name, None)
            if fn is None:
                continue
            self._saved.append((owner, name, fn))
            setattr(owner, name, self._wrap(owner, name, fn, is_torch))
        return self

    def __exit__(self, *exc):
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()
        return False


class ModelRegistry:
    """Torch modules reachable from the pack's caches (module globals whose name contains CACHE or
    RESTORER), hashed when first seen; :meth:`changed` names those whose weights differ since."""

    def __init__(self):
        self._seen: Dict[int, Tuple[Any, str, tuple]] = {}

    @staticmethod
    def _modules(extra=()) -> List[Any]:
        import torch

        found, seen = [], set()

        def walk(obj, depth):
            if id(obj) in seen or depth > 4:
                return
            seen.add(id(obj))
            if isinstance(obj, torch.nn.Module):
                found.append(obj)
                return
            if isinstance(obj, dict):
                for v in list(obj.values()):
                    walk(v, depth + 1)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    walk(v, depth + 1)
            elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith(pack().__name__):
                for v in list(vars(obj).values()):
                    walk(v, depth + 1)

        prefix = pack().__name__ + "."
        for name, mod in list(sys.modules.items()):
            if not name.startswith(prefix) or mod is None:
                continue
            for gname, value in list(vars(mod).items()):
                if ("CACHE" in gname.upper() or "RESTORER" in gname.upper()) and isinstance(value, (dict, list, tuple)):
                    walk(value, 0)
        for value in extra:  # models handed to the node as inputs (a RESTOREKIT_MODEL)
            walk(value, 1)
        return found

    @staticmethod
    def _fingerprint(m) -> tuple:
        fp = []
        for t in list(m.parameters()) + list(m.buffers()):
            try:
                v = t._version
            except Exception:
                v = -1
            fp.append((t.data_ptr(), v, str(t.dtype), str(t.device)))
        return tuple(fp)

    @staticmethod
    def _hash(m) -> str:
        import torch

        h = hashlib.blake2b(digest_size=16)
        for k, t in m.state_dict().items():
            h.update(k.encode())
            h.update(str(t.dtype).encode())
            a = t.detach().to("cpu").contiguous()
            if a.dtype == torch.bfloat16:
                a = a.view(torch.int16)
            h.update(a.numpy().tobytes() if a.numel() else b"")
        return h.hexdigest()

    def observe(self, extra=()) -> List[str]:
        """Register new modules (from the pack's caches and ``extra`` input values); return a
        description of each known module whose weights changed."""
        changed = []
        for m in self._modules(list(extra)):
            key = id(m)
            entry = self._seen.get(key)
            if entry is not None and entry[0]() is not m:
                entry = None
            if entry is None:
                self._seen[key] = (weakref.ref(m), self._hash(m), self._fingerprint(m))
                continue
            ref, digest, fp = entry
            now = self._fingerprint(m)
            if now == fp:
                continue
            d2 = self._hash(m)
            if d2 != digest:
                dtypes = sorted({str(p.dtype) for p in m.parameters()})
                changed.append(f"{type(m).__name__} weights changed in place (now {', '.join(dtypes)})")
                self._seen[key] = (ref, d2, now)  # report each change once
            else:
                self._seen[key] = (ref, digest, now)
        return changed


def _arrays_in(value, path: str, depth: int = 0):
    """(path, tensor or array) for every tensor/array in an input value (tensors, dicts such as a
    RESTOREKIT_PSF, lists)."""
    import torch

    if depth > 3:
        return
    if isinstance(value, (torch.Tensor, np.ndarray)):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _arrays_in(v, f"{path}[{k!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _arrays_in(v, f"{path}[{i}]", depth + 1)


def _snapshot(kwargs) -> Dict[str, Any]:
    """Copies of every tensor/array the inputs hold (model weights are the registry's job)."""
    snap = {}
    for k, v in kwargs.items():
        for path, a in _arrays_in(v, k):
            snap[path] = (a, a.clone() if hasattr(a, "clone") else a.copy(), a.dtype, tuple(a.shape),
                          a.stride() if hasattr(a, "stride") and callable(a.stride) else a.strides)
    return snap


def _mutated(snap) -> List[str]:
    import torch

    out = []
    for path, (v, copy, dtype, shape, stride) in snap.items():
        now_stride = v.stride() if isinstance(v, torch.Tensor) else v.strides
        if v.dtype != dtype or tuple(v.shape) != shape or now_stride != stride:
            out.append(f"{path}: dtype/shape/stride changed")
            continue
        if isinstance(v, torch.Tensor):
            same = (v == copy) | (torch.isnan(v) & torch.isnan(copy)) if v.is_floating_point() else (v == copy)
            changed = int((~same).sum())
        else:
            same = (v == copy) | (np.isnan(v) & np.isnan(copy)) if v.dtype.kind in "fc" else (v == copy)
            changed = int(np.size(same) - np.count_nonzero(same))
        if changed:
            out.append(f"{path}: {changed} value(s) changed in place")
    return out


def _walk_arrays(obj, depth=0):
    import torch

    if depth > 3:
        return
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_arrays(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_arrays(v, depth + 1)


def check_outputs(case: Case, cls, result) -> List[Failure]:
    import torch

    fails: List[Failure] = []
    rtypes = list(getattr(cls, "RETURN_TYPES", ()))
    if not isinstance(result, (tuple, list)) or len(result) != len(rtypes):
        return [Failure("violation", "outputs", f"returned {type(result).__name__} of length "
                        f"{len(result) if hasattr(result, '__len__') else '?'}, declared {len(rtypes)}")]
    src = case.kwargs.get(case.primary) if case.primary else None
    src_shape = None
    if isinstance(src, torch.Tensor):
        src_shape = tuple(src.shape) if src.dim() == 4 else (1,) + tuple(src.shape)
    has_alpha_in = src_shape is not None and src_shape[-1] == 4
    alpha_seen = False
    for slot, (rtype, value) in enumerate(zip(rtypes, result)):
        tag = f"output {slot} ({rtype})"
        if rtype == "IMAGE":
            if not isinstance(value, torch.Tensor):
                fails.append(Failure("violation", "type", f"{tag} is {type(value).__name__}"))
                continue
            if value.dtype != torch.float32 or value.dim() != 4:
                fails.append(Failure("violation", "dtype/rank", f"{tag}: {value.dtype} rank {value.dim()}"))
                continue
            b, h, w, c = value.shape
            if c not in (1, 3, 4):
                fails.append(Failure("violation", "channels", f"{tag}: {c} channels"))
            if case.primary and b != case.batch:
                fails.append(Failure("violation", "batch", f"{tag}: batch {b}, input batch {case.batch}"))
            if min(b, h, w) == 0:
                fails.append(Failure("violation", "shape", f"{tag}: empty shape {tuple(value.shape)}"))
                continue
            if src_shape is not None:
                sh, sw = src_shape[1], src_shape[2]
                if case.node in RESIZING_NODES:
                    if abs(h / sh - w / sw) > 1.0 / sh + 1.0 / sw + 1e-6:
                        fails.append(Failure("violation", "aspect", f"{tag}: {h}x{w} from {sh}x{sw}"))
                elif (h, w) != (sh, sw):
                    fails.append(Failure("violation", "size", f"{tag}: {h}x{w}, input {sh}x{sw}"))
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                fails.append(Failure("violation", "finite", f"{tag}: {int((~finite).sum())} NaN/inf value(s)"))
                continue
            colour = value[..., :3] if c == 4 else value
            lo, hi = float(colour.min()), float(colour.max())
            if lo < 0.0 or hi > 1.0:
                fails.append(Failure("violation", "range", f"{tag}: values {lo:.9g}..{hi:.9g} outside 0..1"))
            if c == 4:
                alpha_seen = True
                alo, ahi = float(value[..., 3].min()), float(value[..., 3].max())
                if not has_alpha_in:
                    fails.append(Failure("violation", "alpha", f"{tag}: 4 channels from a {src_shape} input"))
                elif alo < 0.0 or ahi > 1.0:
                    fails.append(Failure("violation", "alpha", f"{tag}: alpha {alo:.4g}..{ahi:.4g} outside 0..1"))
                elif (h, w) == (src_shape[1], src_shape[2]):
                    errs = []
                    for want in expected_alphas(src):
                        want = want.expand(b, *want.shape[1:]) if want.shape[0] == 1 else want
                        if want.shape[0] == b:
                            errs.append(float((value[..., 3:4] - want).abs().max()))
                    if errs and min(errs) > 1e-5:
                        fails.append(Failure("violation", "alpha",
                                             f"{tag}: alpha differs from the rule by up to {min(errs):.4g}"))
        elif rtype == "STRING":
            if not isinstance(value, str):
                fails.append(Failure("violation", "type", f"{tag} is {type(value).__name__}"))
            elif mentions_nonfinite(value) and case.finite_widgets:  # not a "nan" the user typed
                m = _NONFINITE_WORD.search(value)
                line = next((ln for ln in value.splitlines() if m.group(0) in ln), "")
                fails.append(Failure("violation", "info-nan", f"{tag} says {line.strip()[:160]!r}"))
        else:
            for a in _walk_arrays(value):
                ok = bool(torch.isfinite(a).all()) if isinstance(a, torch.Tensor) and a.is_floating_point() else \
                    (not isinstance(a, np.ndarray) or a.dtype.kind not in "fc" or bool(np.isfinite(a).all()))
                if not ok:
                    fails.append(Failure("violation", "finite", f"{tag}: holds NaN/inf"))
                    break
    if has_alpha_in and not alpha_seen and any(t == "IMAGE" for t in rtypes):
        fails.append(Failure("violation", "alpha", "the input's alpha is missing from every IMAGE output"))
    return fails


# --- known failures --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Known:
    key: str
    nodes: Tuple[str, ...]
    checks: Tuple[str, ...]                      # Failure.check values ("*" = any)
    when: Callable[[Case, Failure], bool]
    why: str

    def matches(self, case: Case, f: Failure) -> bool:
        return (case.node in self.nodes and ("*" in self.checks or f.check in self.checks)
                and bool(self.when(case, f)))


MODEL_NODES = ("RestoreKitRealESRGAN", "RestoreKitSCUNet", "RestoreKitSFHformer", "RestoreKitNoiseDA",
               "RestoreKitRestoreWithModel")


def _primary_side(case: Case) -> int:
    shape = case.meta.get(case.primary, {}).get("shape", ())
    return min(shape[-3:-1]) if len(shape) >= 3 else 0


def _range_of(f: "Failure") -> Tuple[float, float]:
    """(lo, hi) of a range failure's message 'values LO..HI outside 0..1'."""
    m = re.search(r"values (\S+?)\.\.(\S+) outside", f.message)
    try:
        return (float(m.group(1)), float(m.group(2))) if m else (-np.inf, np.inf)
    except ValueError:
        return -np.inf, np.inf


#: Failures owned by other work, counted as "known" (each: node + condition + who fixes it).
#: Remove an entry when its owner's fix lands; ``--strict`` counts them as failures again.
KNOWN: List[Known] = [
    Known("model-precision-mutates-cache", MODEL_NODES, ("model-changed",),
          lambda c, f: c.kwargs.get("precision") in ("bf16", "fp16", "auto"),
          "issue 13 item 4 (phase 2, with #18): precision conversion must work on a copy"),
    Known("range-rule-model-nodes", MODEL_NODES, ("finite", "alpha"), lambda c, f: not c.in_range,
          "model nodes (phase 2, with issue 18): out-of-range input goes to the network as is; 1e30 in "
          "fp16/bf16 overflows to inf, the network returns NaN and the runner passes it on unchecked"),
    Known("tiled-blend-overshoot", MODEL_NODES, ("range",),
          lambda c, f: _range_of(f)[1] <= 1.0 + 1e-5 and _range_of(f)[0] >= -1e-5,
          "model runner (phase 2 tile planner, issue 18): feathered tiles of values at 1.0 sum to 1 + 1e-7; "
          "the blended output is not clamped"),
    Known("sfhformer-small-side", ("RestoreKitSFHformer",), ("*",),
          lambda c, f: f.kind == "crash" and (_primary_side(c) <= 8 or 0 < c.kwargs.get("tile", 0) <= 8),
          "issue 13 item 7: SFHformer on a side <= 8 px, or forced tiles that small (padding error; "
          "tile planner, perf), phase 2"),
    Known("realesrgan-zero-output", ("RestoreKitRealESRGAN",), ("*",),
          lambda c, f: f.kind == "crash" and c.kwargs.get("output_scale", 0) > 0
          and round(_primary_side(c) * c.kwargs["output_scale"]) == 0,
          "issue 13 item 7: output_scale rounds a side to 0, phase 2"),
]


def classify(case: Case, failures: List[Failure], strict: bool = False):
    """Split failures into (unknown, known-with-key)."""
    unknown, known = [], []
    for f in failures:
        k = None if strict else next((k for k in KNOWN if k.matches(case, f)), None)
        (known if k else unknown).append((f, k.key if k else None))
    return [f for f, _ in unknown], known


# --- running -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    case: Case
    status: str                       # ok | refused | failed | known | skipped
    failures: List[Failure]
    known: List[Tuple[Failure, str]]
    seconds: float
    error: str = ""
    warnings: List[str] = dataclasses.field(default_factory=list)


def run_case(case: Case, classes, registry: ModelRegistry, strict: bool = False) -> Outcome:
    cls = classes[case.node]
    if "_unavailable" in case.meta:
        return Outcome(case, "skipped", [], [], 0.0, case.meta["_unavailable"]["why"])
    registry.observe(case.kwargs.values())
    snap = _snapshot(case.kwargs)
    fails: List[Failure] = []
    error = ""
    t0 = time.perf_counter()
    with NanSpy() as spy, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ret = getattr(cls(), cls.FUNCTION)(**case.kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below
            ret = None
            clear, where = is_clear_error(exc)
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            if not clear:
                fails.append(Failure("crash", type(exc).__name__, error, where))
                if os.environ.get("RESTOREKIT_FUZZ_TRACE"):
                    traceback.print_exception(exc)
            elif case.finite and case.finite_widgets and mentions_nonfinite(str(exc)):
                fails.append(Failure("hidden-nan", "nan-in-error", error, where))
    seconds = time.perf_counter() - t0
    numeric = sorted({f"{os.path.relpath(w.filename, REPO)}:{w.lineno} {str(w.message)[:60]}" for w in caught
                      if issubclass(w.category, RuntimeWarning) and _pack_file(w.filename)})
    for hit in sorted(set(spy.hits)):
        if case.finite:
            fails.append(Failure("hidden-nan", "nan_to_num", "a NaN/inf made inside was replaced", hit))
    fails += [Failure("violation", "mutation", m) for m in _mutated(snap)]
    fails += [Failure("violation", "model-changed", m) for m in registry.observe(case.kwargs.values())]
    if ret is not None:
        result = ret["result"] if isinstance(ret, dict) and "result" in ret else ret
        fails += check_outputs(case, cls, result)
        if not case.finite:
            fails.append(Failure("violation", "accepted-nonfinite", "an input with NaN/inf was processed"))
        if not case.well_formed:
            fails.append(Failure("violation", "accepted-malformed", "a malformed IMAGE was processed"))
    unknown, known = classify(case, fails, strict)
    if unknown:
        status = "failed"
    elif known:
        status = "known"
    else:
        status = "ok" if ret is not None else "refused"
    return Outcome(case, status, unknown, known, seconds, error, numeric)


@dataclasses.dataclass
class Summary:
    outcomes: List[Outcome]
    seconds: float
    requested: Optional[int] = None  # cases asked for, when a time budget stopped the run earlier

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if any(f.kind == kind for f in o.failures))

    @property
    def crashes(self):
        return self.count("crash")

    @property
    def violations(self):
        return self.count("violation")

    @property
    def hidden_nans(self):
        return self.count("hidden-nan")

    @property
    def failed(self) -> List[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self, show: int = 200) -> str:
        st = Counter(o.status for o in self.outcomes)
        known = Counter(k for o in self.outcomes for _, k in o.known)
        budget = f" (of {self.requested}: time budget reached)" if self.requested else ""
        lines = [f"cases {len(self.outcomes)}{budget}  ok {st['ok']}  refused {st['refused']}  known {st['known']}  "
                 f"skipped {st['skipped']}  |  crashes {self.crashes}  contract violations {self.violations}  "
                 f"hidden NaNs {self.hidden_nans}  |  {self.seconds:.0f} s"]
        per_node = defaultdict(Counter)
        for o in self.outcomes:
            per_node[o.case.node][o.status] += 1
        lines.append("per node: " + "; ".join(
            f"{n} {dict(c)}" for n, c in sorted(per_node.items())))
        if known:
            lines.append("known (see KNOWN in tests/fuzz.py): " + ", ".join(f"{k} x{n}" for k, n in known.most_common()))
        refusals = Counter()
        for o in self.outcomes:
            if o.status == "refused" and o.case.finite and o.case.well_formed:
                refusals[(o.case.node, re.sub(r"[-+]?\d[\d.e+-]*", "#", o.error)[:110])] += 1
        if refusals:
            lines.append("refusals of finite, well-formed input (check they are deliberate):")
            lines += [f"  x{k}  {node}: {msg}" for (node, msg), k in refusals.most_common(25)]
        numeric = Counter(w for o in self.outcomes for w in o.warnings)
        if numeric:
            lines.append("numeric RuntimeWarnings raised in pack code (a NaN/inf made; handled or not):")
            lines += [f"  x{n}  {w}" for w, n in numeric.most_common(15)]
        slow = sorted(self.outcomes, key=lambda o: -o.seconds)[:5]
        lines.append("slowest: " + "; ".join(f"{o.case.node} {o.seconds:.1f}s (--case-seed {o.case.seed})" for o in slow))
        for o in self.failed[:show]:
            for f in o.failures:
                lines.append(f"FAIL {f.line()}")
            lines.append(f"     {o.case.node}: {o.case.describe()}")
            lines.append(f"     reproduce: {o.case.reproducer()}")
        return "\n".join(lines)


def run(n_cases: int, seed: int = 0, profile: str = "long", nodes: Optional[List[str]] = None,
        strict: bool = False, progress: Optional[Callable[[int, Outcome], None]] = None,
        case_seeds: Optional[List[int]] = None, minutes: Optional[float] = None, start: int = 0) -> Summary:
    """Run ``n_cases`` cases round-robin over ``nodes`` (default: every node); case ``i`` has the
    seed ``seed * 1_000_000 + i`` so any case can be rerun alone.  ``minutes``: stop starting new
    cases after this wall time (the summary says how many of the requested cases ran).  ``start``:
    index of the first case, so a chunk pairs each seed with the node the whole run gives it."""
    prof = PROFILES[profile]
    classes = node_classes()
    names = sorted(nodes or classes)
    unknown_nodes = [n for n in names if n not in classes]
    if unknown_nodes:
        raise SystemExit(f"unknown node(s): {', '.join(unknown_nodes)}")
    registry = ModelRegistry()
    outcomes = []
    t0 = time.perf_counter()
    seeds = case_seeds if case_seeds is not None else [seed * 1_000_000 + i for i in range(n_cases)]
    for i, cs in enumerate(seeds):
        if minutes is not None and time.perf_counter() - t0 > 60.0 * minutes:
            return Summary(outcomes, time.perf_counter() - t0, requested=len(seeds))
        node = names[(start + i) % len(names)]
        case = make_case(node, cs, prof, classes)
        o = run_case(case, classes, registry, strict)
        case.kwargs = {}  # the report needs the description only; keep memory flat over long runs
        outcomes.append(o)
        if progress:
            progress(i, o)
    return Summary(outcomes, time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz every RestoreKit node (issue 13).")
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0, help="master seed: case i has seed SEED*1000000+i")
    ap.add_argument("--start", type=int, default=0, help="first case index (run the long profile in chunks)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="long")
    ap.add_argument("--node", action="append", help="only this node (repeatable)")
    ap.add_argument("--case-seed", type=int, action="append", help="run exactly this case seed (with --node)")
    ap.add_argument("--strict", action="store_true", help="count KNOWN failures as failures")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--show", type=int, default=200, help="failures to print")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--minutes", type=float, help="time budget: start no case after this many minutes")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.case_seed and not a.node:
        ap.error("--case-seed needs --node")
    seeds = a.case_seed if a.case_seed else [a.seed * 1_000_000 + i for i in range(a.start, a.start + a.cases)]
    if a.case_seed and a.node and len(a.node) == 1:
        pass

    def progress(i, o):
        if a.quiet:
            return
        if o.status == "failed" or a.case_seed:
            print(f"[{i}] {o.case.node} {o.status} {o.seconds:.2f}s {o.error}", flush=True)
            for f in o.failures:
                print(f"     {f.line()}", flush=True)
            print(f"     {o.case.describe()}\n     reproduce: {o.case.reproducer()}", flush=True)
        elif (i + 1) % 500 == 0:
            print(f"[{i + 1}] ...", flush=True)

    with environment():
        summary = run(len(seeds), a.seed, a.profile, a.node, a.strict, progress, case_seeds=seeds,
                      minutes=a.minutes, start=0 if a.case_seed else a.start)
    print(summary.report(a.show))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
