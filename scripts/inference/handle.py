"""What the memory-safe runner needs to know about an image-to-image network.

A :class:`ModelHandle` wraps a ``torch.nn.Module`` that maps ``[N, C_in, H, W]`` float images in 0..1 to
``[N, C_out, H*scale, W*scale]``, plus the facts the tile planner uses: integer scale, the size multiple
the network needs, the grid tile starts align to, the overlap tiles need, the smallest sensible tile,
whether tiling is advisable, and which precisions work.
Handles come from spandrel descriptors (:func:`scripts.inference.files.handle_from_spandrel`) or from the
pack's own architectures in ``scripts/archs/``.

**A loaded model never changes.**  The module is the fp32 master; a run in another precision or on
another device works on a *copy* (:meth:`ModelHandle.variant`): reduced-precision CPU copies are kept
on the handle (their bytes are reported by :meth:`ModelHandle.variant_bytes`, which the planner counts),
device copies live for one run.  Copies are built outside ``torch.inference_mode`` so that their
weights are ordinary tensors, usable inside and outside inference mode alike.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

TILING_MODES = ("supported", "discouraged", "internal")
PAD_MODES = ("reflect", "replicate", "constant")

#: What tiles of each architecture need, whichever loader made the handle (spandrel, our archs, ncnn):
#: size multiple and pad mode of the official code, the grid tile starts align to, the overlap (input
#: px) and the smallest useful tile.  Sources: SCUNet pads replicate to 64 and attends in 8 px windows
#: at 1/8 resolution (64 input px); Noise-DA pools three times (8) and pads replicate; SFHformer
#: down-samples twice (official crop to 8) and its low-light family pads 7x7 convolutions by
#: reflection at 1/4 resolution (sides below 16 px fail); the Real-ESRGAN overlaps are the smallest
#: whose seams stay within 1/255 of the whole-image run on real weights
#: (``benchmarks/bench_core.py --seams``).
#: ``reduced_tolerance``: the bound a bf16/fp16 copy must meet against fp32 (mean, 99.9th percentile of
#: |difference|, 0..1 units) to be chosen under ``auto``; measured on random weights at 96x112 px, bf16 on
#: an AVX512-BF16 CPU: ESRGAN 64 filters/2 blocks 1.4e-3 / 7.6e-3, Compact 1.0e-3 / 3.9e-3, SCUNet
#: 4.9e-4 / 2.9e-3, Noise-DA 1.4e-3 / 6.0e-3 (tests/test_model_fastpath.py checks each against its bound).
#: SFHformer runs in fp32 only (its Fourier branch needs fp32 FFTs).
ARCH_RULES = {
    "SCUNet": dict(size_multiple=64, tile_align=64, pad_mode="replicate", min_overlap=64, min_tile=192,
                   tiling="supported", reduced_tolerance=(1e-3, 1e-2)),
    "Noise-DA": dict(size_multiple=8, tile_align=8, pad_mode="replicate", min_overlap=64,
                     reduced_tolerance=(2.5e-3, 1.5e-2)),
    "SFHformer": dict(size_multiple=8, tile_align=8, min_overlap=64, min_size=16, tiling="discouraged"),
    "ESRGAN": dict(min_overlap=16, reduced_tolerance=(2.5e-3, 1.5e-2)),
    "RealESRGAN Compact": dict(min_overlap=16, reduced_tolerance=(2e-3, 1e-2)),
}


def apply_arch_rules(handle: "ModelHandle") -> "ModelHandle":
    """Set the tile facts of :data:`ARCH_RULES` for the handle's architecture (in place; returns it).
    Size multiples and minimum sizes only ever grow."""
    for key, value in ARCH_RULES.get(handle.arch, {}).items():
        if key in ("size_multiple", "min_size", "min_tile", "tile_align", "min_overlap"):
            value = max(int(getattr(handle, key)), int(value))
        setattr(handle, key, value)
    handle.__post_init__()
    return handle


@dataclass
class ModelHandle:
    module: torch.nn.Module
    arch: str
    scale: int = 1
    in_channels: int = 3
    out_channels: int = 3
    size_multiple: int = 1
    pad_mode: str = "reflect"
    min_overlap: int = 16
    tiling: str = "supported"
    supports_half: bool = False
    supports_bfloat16: bool = False
    clamp: bool = True
    source: str = ""
    description: str = ""
    min_size: int = 0
    #: tile starts are multiples of this (input px; 0 = the size multiple): the network's grid, e.g.
    #: SCUNet's 64 px attention windows, Noise-DA's three 2x poolings
    tile_align: int = 0
    #: the smallest tile side worth running (input px; 0 = :data:`scripts.inference.planning.MIN_TILE`)
    min_tile: int = 0
    #: output precision bound a reduced-precision copy must meet against fp32 to be chosen
    #: automatically: (mean |diff|, 99.9th percentile |diff|) on the probe tile (0..1 units)
    reduced_tolerance: Tuple[float, float] = (2e-3, 2e-2)
    extra: dict = field(default_factory=dict)
    _variants: Dict[tuple, torch.nn.Module] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: measured costs per (device, dtype, layout) (:mod:`scripts.inference.planning`)
    costs: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.scale) < 1:
            raise ValueError(f"model scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        self.size_multiple = max(1, int(self.size_multiple))
        self.tile_align = max(0, int(self.tile_align))
        self.min_tile = max(0, int(self.min_tile))
        if self.tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {TILING_MODES}, got {self.tiling!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        self.module.eval()

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    def parameter_bytes(self, dtype: Optional[torch.dtype] = None) -> int:
        """Bytes of the weights (in ``dtype`` when given, else as stored)."""
        if dtype is None:
            return _module_bytes(self.module)
        size = torch.empty((), dtype=dtype).element_size()
        return sum(t.numel() * (size if t.is_floating_point() else t.element_size())
                   for t in list(self.module.parameters()) + list(self.module.buffers()))

    @property
    def align(self) -> int:
        """The grid tile starts align to (input px)."""
        return max(self.tile_align or 1, self.size_multiple)

    def variant(self, device, dtype: torch.dtype = torch.float32, keep: bool = True) -> torch.nn.Module:
        """The network on ``device`` in ``dtype``: the master itself for CPU fp32, else a copy.

        The master (:attr:`module`) is never converted.  A CPU copy in another dtype is kept on the
        handle when ``keep`` (one per dtype; :meth:`variant_bytes` counts them); a copy on a GPU is not
        kept (call :meth:`drop_variants` or let it go out of scope after the run).
        """
        device = torch.device(device)
        if dtype != torch.float32:
            if dtype == torch.float16 and not self.supports_half:
                raise ValueError(f"{self.arch} does not support fp16")
            if dtype == torch.bfloat16 and not self.supports_bfloat16:
                raise ValueError(f"{self.arch} does not support bf16")
        master = self.module
        if device.type == self.device.type and dtype == self.dtype:
            return master
        key = (str(device), dtype)
        with self._lock:
            if key in self._variants:
                return self._variants[key]
        with torch.inference_mode(False), torch.no_grad():
            # ordinary (non-inference) tensors: usable inside and outside inference mode
            net = copy.deepcopy(master).to(device=device, dtype=dtype).eval()
            for p in net.parameters():
                p.requires_grad_(False)
        if keep and device.type == "cpu":
            with self._lock:
                self._variants[key] = net
        return net

    def variant_bytes(self, device=None, dtype: Optional[torch.dtype] = None) -> int:
        """Bytes held by kept copies (all of them, or the one for ``device``/``dtype``)."""
        total = 0
        with self._lock:
            items = list(self._variants.items())
        for (dev, dt), net in items:
            if (device is None or dev == str(torch.device(device))) and (dtype is None or dt == dtype):
                total += _module_bytes(net)
        return total

    def has_variant(self, device, dtype: torch.dtype) -> bool:
        device = torch.device(device)
        if device.type == self.device.type and dtype == self.dtype:
            return True
        with self._lock:
            return (str(device), dtype) in self._variants

    def drop_variants(self) -> None:
        """Forget every kept copy (the master stays)."""
        with self._lock:
            self._variants.clear()

    def replace(self, **changes) -> "ModelHandle":
        """A new handle with ``changes`` (same module; kept copies and measured costs start empty)."""
        changes.setdefault("_variants", {})
        changes.setdefault("_lock", threading.Lock())
        changes.setdefault("costs", {})
        return dataclasses.replace(self, **changes)

    def info_fields(self) -> dict:
        """How a node shows the handle (:func:`scripts.report.info_text`)."""
        return {"architecture": self.describe(), "size multiple": self.size_multiple, "tiling": self.tiling,
                "fp16": self.supports_half, "bf16": self.supports_bfloat16}

    def describe(self) -> str:
        return (
            f"{self.arch} x{self.scale} ({self.in_channels}->{self.out_channels} ch, "
            f"{sum(p.numel() for p in self.module.parameters()) / 1e6:.2f} M params)"
        )


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers())
