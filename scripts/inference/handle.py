"""What the memory-safe runner needs to know about an image-to-image network.

A :class:`ModelHandle` wraps a ``torch.nn.Module`` that maps ``[N, C_in, H, W]`` float images in 0..1 to
``[N, C_out, H*scale, W*scale]``, plus the facts the tile planner uses: integer scale, the size multiple
the network needs, the overlap tiles need, whether tiling is advisable, and which precisions work.
Handles come from spandrel descriptors (:func:`scripts.inference.files.handle_from_spandrel`) or from the
pack's own architectures in ``scripts/archs/``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

TILING_MODES = ("supported", "discouraged", "internal")
PAD_MODES = ("reflect", "replicate", "constant")


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
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.scale) < 1:
            raise ValueError(f"model scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        self.size_multiple = max(1, int(self.size_multiple))
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

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters()) + sum(
            b.numel() * b.element_size() for b in self.module.buffers()
        )

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "ModelHandle":
        """Move the network in place (returns self)."""
        if dtype is not None and dtype != torch.float32:
            if dtype == torch.float16 and not self.supports_half:
                raise ValueError(f"{self.arch} does not support fp16")
            if dtype == torch.bfloat16 and not self.supports_bfloat16:
                raise ValueError(f"{self.arch} does not support bf16")
        self.module.to(device=device, dtype=dtype)
        return self

    def replace(self, **changes) -> "ModelHandle":
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
