"""Tiled inference for any image-to-image network with an integer scale.

Tiles are laid out evenly along each axis (every neighbouring pair overlaps by at least ``overlap``
input pixels).  In each overlap a feather band of half the overlap's width, centred in it, blends the
two tiles with complementary linear ramps, so the per-pixel weights of all tiles sum to exactly 1.
That is why the output can be accumulated straight into the final ``[B, H*s, W*s, C]`` float32 buffer
with only a tile-sized weight map beside it: no second full-size "divisor" buffer (ComfyUI core's
method keeps two full-size buffers).  Outside the feather bands a pixel comes from exactly one tile,
at least ``overlap/4`` px away from that tile's inner edges: a network whose receptive radius is at
most ``overlap/4`` gives the same result tiled and untiled.

Tile inputs are padded to the network's size multiple (reflect, replicate or zero) and the output is
cropped back.  A progress callback and an interrupt check run once per tile.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` px, spread evenly.

    Every neighbouring pair overlaps by ≥ ``overlap``; a single tile when ``length <= tile``.
    """
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    n = int(math.ceil((length - tile) / stride)) + 1
    span = length - tile
    return [int(round(i * span / (n - 1))) for i in range(n)]


def axis_weights(starts: List[int], tile: int, length: int, scale: int) -> List[torch.Tensor]:
    """1-D blend weights (at output resolution) for the tiles at ``starts``; they sum to 1."""
    extents = [(s, min(s + tile, length)) for s in starts]
    weights = []
    for i, (a, b) in enumerate(extents):
        size = (b - a) * scale
        w = torch.ones(size, dtype=torch.float32)
        if i > 0:  # ramp up in the band shared with the previous tile
            w *= _ramp(a, extents[i - 1][1], a, scale, size, rising=True)
        if i < len(extents) - 1:  # ramp down in the band shared with the next tile
            w *= _ramp(extents[i + 1][0], b, a, scale, size, rising=False)
        weights.append(w)
    # With a large overlap three tiles can share a band; dividing by the per-axis sum keeps the
    # weights an exact partition of unity in every case (a no-op when only pairs overlap).
    total = torch.zeros(length * scale, dtype=torch.float32)
    for (a, _b), w in zip(extents, weights):
        total[a * scale:a * scale + len(w)] += w
    return [w / total[a * scale:a * scale + len(w)] for (a, _b), w in zip(extents, weights)]


def _ramp(ov_start: int, ov_end: int, origin: int, scale: int, size: int, rising: bool) -> torch.Tensor:
    """Weight over one tile for the overlap ``[ov_start, ov_end)`` (input px).

    The band is half the overlap wide, centred in it; the weight is 0 before it and 1 after it
    (``rising``) or the complement, with a linear ramp inside.  Both tiles of a pair compute the same
    band, so their weights add up to exactly 1.
    """
    o = ov_end - ov_start
    if o <= 0:
        return torch.ones(size, dtype=torch.float32)
    band = max(1, o // 2)
    start = (ov_start + (o - band) // 2 - origin) * scale
    idx = torch.arange(size, dtype=torch.float32) - start
    up = ((idx + 0.5) / (band * scale)).clamp(0.0, 1.0)
    return up if rising else 1.0 - up


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 0, mode: str = "reflect") -> Tuple[torch.Tensor, int, int]:
    """Pad ``[N,C,H,W]`` on the bottom/right to a multiple of ``multiple`` (and ≥ ``min_size``)."""
    h, w = x.shape[-2:]
    th = max(int(math.ceil(h / multiple) * multiple), min_size)
    tw = max(int(math.ceil(w / multiple) * multiple), min_size)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x, 0, 0
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflect needs the pad smaller than the side
    if mode == "constant":
        return F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0), ph, pw
    return F.pad(x, (0, pw, 0, ph), mode=mode), ph, pw


def count_tiles(height: int, width: int, tile: Optional[int], overlap: int) -> int:
    if not tile:
        return 1
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def tiled_inference(
    forward: Forward,
    image: torch.Tensor,
    *,
    scale: int,
    out_channels: int,
    tile: Optional[int],
    overlap: int = 32,
    size_multiple: int = 1,
    min_size: int = 0,
    pad_mode: str = "reflect",
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    out: Optional[torch.Tensor] = None,
    on_tile: Optional[Callable[[], None]] = None,
    check_interrupt: Optional[Callable[[], None]] = None,
    clamp: bool = True,
) -> torch.Tensor:
    """Run ``forward`` over ``image`` tile by tile and assemble the result.

    ``image`` is channel-last ``[B, H, W, C_in]`` float32 on the CPU; ``forward`` takes
    ``[1, C_in, h, w]`` on ``device`` in ``dtype`` and returns ``[1, C_out, h*scale, w*scale]``.
    Returns (and fills ``out`` when given) ``[B, H*scale, W*scale, C_out]`` float32 on the CPU.
    ``tile=None`` (or a tile covering the image) runs the whole image at once.

    With ``out=None``, one image and no tiling, the network's own output is returned (as a
    ``[1, H', W', C]`` view when it is channels-last, which mkldnn produces from a channel-last
    IMAGE): no second output-sized buffer is allocated, so peak memory equals the bare network call.
    """
    b, h, w, _c = image.shape
    s = int(scale)
    if tile is not None and tile >= h and tile >= w:
        tile = None
    if out is None and tile is None and b == 1:
        return _whole_image(forward, image, s, out_channels, size_multiple, min_size, pad_mode, device,
                            dtype, on_tile, check_interrupt, clamp)
    if out is None:
        out = torch.zeros((b, h * s, w * s, out_channels), dtype=torch.float32)
    else:
        if tuple(out.shape) != (b, h * s, w * s, out_channels):
            raise ValueError(f"output buffer has shape {tuple(out.shape)}, expected {(b, h * s, w * s, out_channels)}")
        out.zero_()
    ys = tile_starts(h, tile, overlap) if tile else [0]
    xs = tile_starts(w, tile, overlap) if tile else [0]
    th = tile if tile else h
    tw = tile if tile else w
    wy = axis_weights(ys, th, h, s) if tile else [None]
    wx = axis_weights(xs, tw, w, s) if tile else [None]

    for bi in range(b):
        for iy, y0 in enumerate(ys):
            y1 = min(y0 + th, h)
            for ix, x0 in enumerate(xs):
                x1 = min(x0 + tw, w)
                if check_interrupt is not None:
                    check_interrupt()
                piece = image[bi:bi + 1, y0:y1, x0:x1, :].permute(0, 3, 1, 2)
                piece = piece.to(device=device, dtype=dtype, non_blocking=True)
                piece, _ph, _pw = pad_to_multiple(piece, size_multiple, min_size, pad_mode)
                with torch.inference_mode():
                    result = forward(piece)[..., : (y1 - y0) * s, : (x1 - x0) * s]
                    if clamp:
                        shares_input = result.untyped_storage().data_ptr() == image.untyped_storage().data_ptr()
                        # in place saves an output-sized copy, but never write into the caller's image
                        result = result.clamp(0.0, 1.0) if shares_input else result.clamp_(0.0, 1.0)
                result = result[0].permute(1, 2, 0).to("cpu", torch.float32)
                target = out[bi, y0 * s:y1 * s, x0 * s:x1 * s, :]
                if tile is None:
                    target.copy_(result)
                else:
                    weight = (wy[iy][:, None] * wx[ix][None, :])[..., None]
                    target.addcmul_(result, weight)
                del piece, result
                if on_tile is not None:
                    on_tile()
    return out


def _whole_image(forward, image, s, out_channels, size_multiple, min_size, pad_mode, device, dtype,
                 on_tile, check_interrupt, clamp) -> torch.Tensor:
    """One image, no tiles, no preallocated buffer: returns ``[1, H*s, W*s, C]`` float32 on the CPU.

    The network runs under ``inference_mode`` (as ComfyUI runs every node; faster and leaner than
    ``no_grad``).  Inside inference mode the network's output is handed back as it is; called
    outside it (tests, the CLI) the result is cloned once into an ordinary tensor, so callers may
    still update it in place.
    """
    _b, h, w, _c = image.shape
    if check_interrupt is not None:
        check_interrupt()
    piece = image.permute(0, 3, 1, 2).to(device=device, dtype=dtype, non_blocking=True)
    piece, _ph, _pw = pad_to_multiple(piece, size_multiple, min_size, pad_mode)
    with torch.inference_mode():
        result = forward(piece)
        del piece
        if result.ndim != 4 or result.shape[0] != 1 or result.shape[1] != out_channels:
            raise ValueError(f"the network returned shape {tuple(result.shape)}, expected [1, {out_channels}, H, W]")
        result = result[..., : h * s, : w * s].permute(0, 2, 3, 1)
        if result.device.type != "cpu" or result.dtype != torch.float32:
            result = result.to("cpu", torch.float32)
    shares_input = result.untyped_storage().data_ptr() == image.untyped_storage().data_ptr()
    if shares_input or (result.is_inference() and not torch.is_inference_mode_enabled()):
        result = result.clone(memory_format=torch.contiguous_format)  # never hand back the caller's image
    elif not result.is_contiguous():
        result = result.contiguous()  # one copy; the network's own output is then freed
    if clamp:  # an inference tensor is only kept inside inference mode, where in-place is allowed
        result.clamp_(0.0, 1.0)
    if on_tile is not None:
        on_tile()
    return result
