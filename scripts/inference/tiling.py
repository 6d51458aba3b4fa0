"""Tiled inference for any image-to-image network with an integer scale.

**Layout** (:func:`tile_grid`): along each axis, as few tiles as cover the side with tiles no longer
than the requested one, their sizes balanced (the tiles divide the image: every tile has the same
size except a shorter last one), their starts and sizes multiples of the network's grid (``align``:
its size multiple or window, e.g. 64 px for SCUNet, 8 for Noise-DA), and each neighbouring pair
overlapping by exactly the overlap the architecture needs, rounded up to the grid.  A network that
down-samples or works in windows therefore sees every tile on the same grid as the whole image, and
the image area computed stays close to ``(1 + overlap/stride)`` per axis (1024x768 with 512 px tiles
and a 32 px overlap: 1.11x, the same as ComfyUI core's fixed tiles) instead of spreading full-size
tiles evenly (2.00x).

**Blending** (:func:`axis_weights`): in each overlap a feather band of half the overlap's width,
centred in it, blends the two tiles with complementary linear ramps, so the per-pixel weights of all
tiles sum to 1.  The output is accumulated straight into the final ``[B, H*s, W*s, C]`` float32
buffer with only a tile-sized weight map beside it: no second full-size "divisor" buffer (ComfyUI
core's method keeps two).  Outside the feather bands a pixel comes from exactly one tile, at least
``overlap/4`` px away from that tile's inner edges: a network whose receptive radius is at most
``overlap/4`` gives the same result tiled and untiled (up to float rounding).  Rounding can put a
blend of values at 1.0 a few ulps above 1, so a clamped network's assembled output is clamped once
more at the end.

Tile inputs are padded to the network's size multiple (reflect, replicate or zero) and the output is
cropped back; since tile starts are on the grid, the last tile of an axis is padded exactly as the
whole image would be.  A progress callback and an interrupt check run once per tile.
"""
from __future__ import annotations

import math
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]
Extent = Tuple[int, int]


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    multiple = max(1, int(multiple))
    return int(-(-int(value) // multiple) * multiple)


def tile_grid(length: int, tile: int, overlap: int, align: int = 1) -> List[Extent]:
    """``(start, end)`` input px of the tiles covering ``[0, length)`` along one axis.

    Starts and tile sizes are multiples of ``align``; neighbouring tiles overlap by ``overlap``
    rounded up to ``align``; no tile is longer than ``tile`` (rounded down to ``align``, and at
    least one grid step longer than the overlap); as few tiles as that allows, of equal size except a
    shorter last one.  One tile when ``length <= tile``.
    """
    length, a = int(length), max(1, int(align))
    ov = round_up(max(0, int(overlap)), a)
    t = max(int(tile) // a * a, ov + a)
    if length <= t:
        return [(0, length)]
    n = int(math.ceil((length - ov) / (t - ov)))
    stride = round_up(int(math.ceil((length - ov) / n)), a)
    while n > 1 and (n - 1) * stride >= length - ov:  # a last tile inside the overlap adds nothing
        n -= 1
    return [(i * stride, min(i * stride + stride + ov, length)) for i in range(n)]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> List[int]:
    """Start offsets of :func:`tile_grid`."""
    return [a for a, _b in tile_grid(length, tile, overlap, align)]


def grid_pixels(height: int, width: int, tile: Optional[int], overlap: int, align: int = 1,
                multiple: int = 1, min_size: int = 0) -> Tuple[int, int, int]:
    """``(tiles, computed px, largest tile px)`` of a plan, counting the padding each tile gets to
    the network's size multiple (``tile=None``: the whole image)."""
    if not tile:
        ys, xs = [(0, height)], [(0, width)]
    else:
        ys, xs = tile_grid(height, tile, overlap, align), tile_grid(width, tile, overlap, align)

    def padded(e: Extent) -> int:
        return max(round_up(e[1] - e[0], multiple), int(min_size))

    hs, ws = [padded(e) for e in ys], [padded(e) for e in xs]
    return len(hs) * len(ws), sum(hs) * sum(ws), max(hs) * max(ws)


def axis_weights(extents: Sequence, tile: Optional[int] = None, length: Optional[int] = None,
                 scale: int = 1) -> List[torch.Tensor]:
    """1-D blend weights (at output resolution) for tiles at ``extents``; they sum to 1.

    ``extents`` are ``(start, end)`` pairs (:func:`tile_grid`), or start offsets together with
    ``tile`` and ``length`` (tiles of side ``tile`` clipped to ``length``).
    """
    extents = [tuple(e) if isinstance(e, (tuple, list)) else (int(e), min(int(e) + int(tile), int(length)))
               for e in extents]
    length = max(b for _a, b in extents) if length is None else int(length)
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


def count_tiles(height: int, width: int, tile: Optional[int], overlap: int, align: int = 1) -> int:
    if not tile:
        return 1
    return len(tile_grid(height, tile, overlap, align)) * len(tile_grid(width, tile, overlap, align))


def _as_input(piece: torch.Tensor, device, dtype, channels_last: bool) -> torch.Tensor:
    """An ``[N, C, h, w]`` view of the IMAGE as the network input: on ``device`` in ``dtype``, in
    channels-last or contiguous NCHW memory (the caller's own memory when it already is that)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return piece.to(device=device, dtype=dtype, non_blocking=True).contiguous(memory_format=fmt)


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
    align: int = 1,
    channels_last: bool = False,
    timer: Optional[Callable[[int, float], None]] = None,
) -> torch.Tensor:
    """Run ``forward`` over ``image`` tile by tile and assemble the result.

    ``image`` is channel-last ``[B, H, W, C_in]`` float32 on the CPU; ``forward`` takes
    ``[1, C_in, h, w]`` on ``device`` in ``dtype`` (channels-last memory when ``channels_last``) and
    returns ``[1, C_out, h*scale, w*scale]``.  Returns (and fills ``out`` when given)
    ``[B, H*scale, W*scale, C_out]`` float32 on the CPU.  ``tile=None`` (or a tile covering the image)
    runs the whole image at once; tiles follow :func:`tile_grid` with ``overlap`` and ``align``.
    ``timer(px, seconds)`` receives the padded pixel count and wall time of every network call.

    With ``out=None``, one image and no tiling, the network's own output is returned (as a
    ``[1, H', W', C]`` view when it is channels-last, which mkldnn produces from a channel-last
    input): no second output-sized buffer is allocated, so peak memory equals the bare network call.
    """
    b, h, w, _c = image.shape
    s = int(scale)
    if tile is not None and tile >= h and tile >= w:
        tile = None
    if out is None and tile is None and b == 1:
        return _whole_image(forward, image, s, out_channels, size_multiple, min_size, pad_mode, device,
                            dtype, on_tile, check_interrupt, clamp, channels_last, timer)
    if out is None:
        out = torch.zeros((b, h * s, w * s, out_channels), dtype=torch.float32)
    else:
        if tuple(out.shape) != (b, h * s, w * s, out_channels):
            raise ValueError(f"output buffer has shape {tuple(out.shape)}, expected {(b, h * s, w * s, out_channels)}")
        out.zero_()
    ys = tile_grid(h, tile, overlap, align) if tile else [(0, h)]
    xs = tile_grid(w, tile, overlap, align) if tile else [(0, w)]
    wy = axis_weights(ys, scale=s) if tile else [None]
    wx = axis_weights(xs, scale=s) if tile else [None]

    for bi in range(b):
        for iy, (y0, y1) in enumerate(ys):
            for ix, (x0, x1) in enumerate(xs):
                if check_interrupt is not None:
                    check_interrupt()
                t0 = time.perf_counter()
                piece = _as_input(image[bi:bi + 1, y0:y1, x0:x1, :].permute(0, 3, 1, 2), device, dtype, channels_last)
                piece, _ph, _pw = pad_to_multiple(piece, size_multiple, min_size, pad_mode)
                px = piece.shape[-1] * piece.shape[-2]
                with torch.inference_mode():
                    result = forward(piece)[..., : (y1 - y0) * s, : (x1 - x0) * s]
                    if clamp:
                        shares_input = result.untyped_storage().data_ptr() == image.untyped_storage().data_ptr()
                        # in place saves an output-sized copy, but never write into the caller's image
                        result = result.clamp(0.0, 1.0) if shares_input else result.clamp_(0.0, 1.0)
                result = result[0].permute(1, 2, 0).to("cpu", torch.float32)
                if timer is not None:
                    timer(px, time.perf_counter() - t0)
                target = out[bi, y0 * s:y1 * s, x0 * s:x1 * s, :]
                if tile is None:
                    target.copy_(result)
                else:
                    weight = (wy[iy][:, None] * wx[ix][None, :])[..., None]
                    target.addcmul_(result, weight)
                del piece, result
                if on_tile is not None:
                    on_tile()
    if clamp and tile is not None:
        out.clamp_(0.0, 1.0)  # a blend of values at 1.0 can round a few ulps above 1
    return out


def _whole_image(forward, image, s, out_channels, size_multiple, min_size, pad_mode, device, dtype,
                 on_tile, check_interrupt, clamp, channels_last=False, timer=None) -> torch.Tensor:
    """One image, no tiles, no preallocated buffer: returns ``[1, H*s, W*s, C]`` float32 on the CPU.

    The network runs under ``inference_mode`` (as ComfyUI runs every node; faster and leaner than
    ``no_grad``).  Inside inference mode the network's output is handed back as it is; called
    outside it (tests, the CLI) the result is cloned once into an ordinary tensor, so callers may
    still update it in place.
    """
    _b, h, w, _c = image.shape
    if check_interrupt is not None:
        check_interrupt()
    t0 = time.perf_counter()
    piece = _as_input(image.permute(0, 3, 1, 2), device, dtype, channels_last)
    piece, _ph, _pw = pad_to_multiple(piece, size_multiple, min_size, pad_mode)
    px = piece.shape[-1] * piece.shape[-2]
    with torch.inference_mode():
        result = forward(piece)
        del piece
        if result.ndim != 4 or result.shape[0] != 1 or result.shape[1] != out_channels:
            raise ValueError(f"the network returned shape {tuple(result.shape)}, expected [1, {out_channels}, H, W]")
        result = result[..., : h * s, : w * s].permute(0, 2, 3, 1)
        if result.device.type != "cpu" or result.dtype != torch.float32:
            result = result.to("cpu", torch.float32)
    if timer is not None:
        timer(px, time.perf_counter() - t0)
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
