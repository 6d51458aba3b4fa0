"""Planning: the tile geometry an architecture needs, and the plan that uses least memory at equal speed.

* :func:`tile_rule` — per architecture: the grid tile starts align to (``ModelHandle.align``), the
  overlap it needs (``min_overlap``, or the user's, rounded up to the grid) and the smallest tile worth
  running (a floor: never a 1 px tile).
* :func:`plan_options` — every candidate plan for an image (the whole image, and tiles from the floor
  up to :data:`MAX_TILE` on a ladder of sizes) with its predicted time and memory from the model's
  measured :class:`~scripts.inference.costs.CostTable`.
* :func:`choose` — the rule, a pure function of those numbers: among the plans that fit the memory
  budget, the least memory among those within :data:`SLACK` (5 %) of the fastest.  The whole image is
  therefore chosen only when it is really faster.
* :func:`plan_tiles` — the two together, plus forced tiles and the budget from free memory.
* :func:`measure_costs` — fills the cost table on probe tiles cut from the image, within a time
  budget (a share of the job's predicted time), so that a plan rests on measurements.

All memory figures are bytes, times seconds, sides input pixels.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from .costs import CostTable, measure_call, probe_input, probe_side, probe_sizes
from .memory_utils import OutOfMemoryError, format_bytes, free_memory
from .tiling import grid_pixels, round_up, tile_grid

#: fraction of free memory the planner leaves untouched
SAFETY_MARGIN = {"cuda": 0.20, "mps": 0.30, "cpu": 0.50}
#: the largest tile side the planner proposes (px; the whole image is a plan of its own)
MAX_TILE = {"cuda": 1024, "mps": 1024, "cpu": 768}
#: the smallest tile side of any architecture (px)
MIN_TILE = 64
#: a timed plan computing more than this fraction of extra pixels (tile overlaps) over the least-overlap
#: plan that fits is only chosen when memory leaves no leaner plan
MAX_OVERLAP_AREA = 0.3
#: plans within this fraction of the fastest count as equally fast; the least memory among them wins
SLACK = 0.05
#: the share of a job's predicted time the planner may spend measuring costs on probe tiles
PROBE_SHARE = 0.10
#: ladder of tile sides between the floor and MAX_TILE (each ~1.25x the previous)
_LADDER = 1.25


def round_to_multiple(value: int, multiple: int, up: bool = False) -> int:
    multiple = max(1, int(multiple))
    if up:
        return round_up(value, multiple)
    return max(multiple, int(value // multiple) * multiple)


# --- geometry -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileRule:
    """Tile geometry of one architecture: grid, overlap and the smallest tile (input px)."""

    align: int
    overlap: int
    floor: int


def tile_rule(handle, overlap: Optional[int] = None) -> TileRule:
    """The tile geometry ``handle`` needs; ``overlap`` (the user's) is raised to the architecture's
    ``min_overlap`` and rounded up to the grid.

    The floor is the largest of :data:`MIN_TILE`, the architecture's ``min_tile`` and ``min_size``,
    twice the architecture's own overlap (tiles advance by at least that much: a 72 px tile with a
    64 px overlap would advance 8 px at a time and compute the image ~9 times) and the overlap asked
    for plus one grid step, rounded up to the grid.
    """
    a = max(1, int(handle.align))
    own = round_up(int(handle.min_overlap), a) if handle.min_overlap > 0 else 0
    ov = max(int(handle.min_overlap), int(overlap or 0))
    ov = round_up(ov, a) if ov > 0 else 0
    floor = max(MIN_TILE, int(handle.min_tile), int(handle.min_size), 2 * own, ov + a)
    return TileRule(align=a, overlap=ov, floor=round_up(floor, a))


def default_overlap(handle, tile: int = 0) -> int:
    """The overlap the architecture needs (input px, on its grid)."""
    return tile_rule(handle).overlap


# --- candidate plans ----------------------------------------------------------------------------------
@dataclass
class PlanOption:
    """One way to run an image: ``tile`` None is the whole image."""

    tile: Optional[int]
    tiles: int
    computed_px: int
    max_px: int
    seconds: float = 0.0
    bytes: float = 0.0

    def label(self) -> str:
        what = "whole image" if self.tile is None else f"tile {self.tile}px ({self.tiles} tiles)"
        t = f"{self.seconds:.2f} s, " if self.seconds else ""
        return f"{what}: {t}{format_bytes(self.bytes)}"


def tile_ladder(floor: int, largest: int, align: int) -> List[int]:
    """Tile sides from ``floor`` up to ``largest``, each about 1.25x the previous, on the grid."""
    sides, s = [], int(floor)
    while s < largest:
        sides.append(s)
        s = max(s + align, round_up(int(s * _LADDER), align))
    return sides


def plan_options(height: int, width: int, rule: TileRule, costs: Optional[CostTable], *, batch: int = 1,
                 multiple: int = 1, min_size: int = 0, max_tile: int = 512, extra_bytes: float = 0.0,
                 bytes_per_pixel: Optional[float] = None) -> List[PlanOption]:
    """The whole image and every tile side of the ladder, with predicted seconds (all images) and
    peak bytes (``extra_bytes``, e.g. the output buffer and a weights copy, added to each)."""
    opts = []
    sides: List[Optional[int]] = [None] + [t for t in tile_ladder(rule.floor, min(max(height, width), max_tile + 1),
                                                                  rule.align)]
    seen = set()
    for t in sides:
        n, computed, biggest = grid_pixels(height, width, t, rule.overlap, rule.align, multiple, min_size)
        if t is not None and n == 1:
            continue  # a tile covering the image is the whole image
        key = (n, computed, biggest)
        if key in seen:
            continue
        seen.add(key)
        if costs is not None and costs.has_time:
            if t is None:
                secs = costs.seconds(computed)
            else:
                ys = _sizes(height, t, rule, multiple, min_size)
                xs = _sizes(width, t, rule, multiple, min_size)
                secs = sum(costs.seconds(a * b) for a in ys for b in xs)
        else:
            secs = 0.0
        if costs is not None and costs.has_memory:
            mem = costs.bytes(biggest)
        else:
            mem = float(bytes_per_pixel or 0.0) * biggest
        opts.append(PlanOption(t, n, computed, biggest, secs * batch, mem + extra_bytes))
    return opts


def _sizes(length: int, tile: int, rule: TileRule, multiple: int, min_size: int) -> List[int]:
    return [max(round_up(b - a, multiple), min_size) for a, b in tile_grid(length, tile, rule.overlap, rule.align)]


def _nothing_fits(options: Sequence[PlanOption], budget: float) -> str:
    """Why no plan was chosen: none fits ``budget`` bytes (with the smallest plan for reference)."""
    least = min(options, key=lambda o: o.bytes) if options else None
    return f"nothing fits the budget of {format_bytes(budget)}" + (f" (smallest plan: {least.label()})" if least else "")


def choose(options: Sequence[PlanOption], budget: float, slack: float = SLACK):
    """The plan to run and why: among ``options`` within ``budget`` bytes (and, when timed, computing at
    most :data:`MAX_OVERLAP_AREA` more pixels than the leanest of them, unless none does), the least
    memory among those within ``slack`` of the fastest (without times, time is taken as proportional
    to the pixels computed: the least memory among plans within ``slack`` of the fewest pixels).  Returns ``(option, reason)``; ``(None, reason)`` when none fits."""
    fits = [o for o in options if o.bytes <= budget]
    if not fits:
        return None, _nothing_fits(options, budget)
    timed = all(o.seconds > 0 for o in fits)
    if not timed:
        # untimed, the time is taken as proportional to the pixels computed (per-pixel time is about
        # flat above the floor tile): the least memory among plans within ``slack`` of the fewest pixels
        least_area = min(o.computed_px for o in fits)
        near = [o for o in fits if o.computed_px <= least_area * (1.0 + slack)]
        pick = min(near, key=lambda o: (o.bytes, o.computed_px, o.tiles))
        others = [o for o in near if o is not pick]
        if pick.tile is None:
            why = f"fits: needs ~{format_bytes(pick.bytes)} of {format_bytes(budget)} budget"
        else:
            why = f"the least memory within the {format_bytes(budget)} budget"
        if others or pick.computed_px > least_area:
            why += (f"; untimed: least memory among plans computing within {slack:.0%} of the fewest pixels "
                    f"(+{pick.computed_px / least_area - 1:.1%})")
        return pick, why
    # timed probes are noisy (the smallest tile is timed most often and its minimum wins): a plan that
    # computes far more pixels than the least-overlap plan is not trusted to be faster, unless memory
    # leaves nothing else (16 MP ESRGAN picked 64 px tiles, 3x slower than core's 512 px)
    least_area = min(o.computed_px for o in fits)
    lean = [o for o in fits if o.computed_px <= least_area * (1.0 + MAX_OVERLAP_AREA)]
    fits = lean or fits
    fastest = min(fits, key=lambda o: (o.seconds, o.bytes))
    near = [o for o in fits if o.seconds <= fastest.seconds * (1.0 + slack)]
    pick = min(near, key=lambda o: (o.bytes, o.seconds))
    if pick is fastest:
        why = f"fastest ({pick.label()})"
        others = [o for o in fits if o is not pick]
        if others:
            cheaper = min(others, key=lambda o: o.bytes)
            if cheaper.bytes < pick.bytes:
                why += f"; less memory costs time: {cheaper.label()}"
    else:
        why = (f"least memory within {slack:.0%} of the fastest: {pick.label()}; fastest "
               f"{fastest.label()}")
    excluded = [o for o in options if o.bytes > budget]
    if excluded and any(o.seconds < pick.seconds for o in excluded):
        why += f"; faster plans exceed the {format_bytes(budget)} budget"
    return pick, why


# --- the plan ------------------------------------------------------------------------------------------
@dataclass
class TilePlan:
    """How an image will be run: ``tile is None`` means the whole image at once."""

    tile: Optional[int]
    overlap: int
    bytes_per_pixel: float
    free_bytes: int
    budget_bytes: int
    reason: str
    predicted_bytes: float = 0.0
    predicted_seconds: float = 0.0
    options: List[PlanOption] = field(default_factory=list)

    def describe(self) -> str:
        if self.tile is None:
            return f"whole image ({self.reason})"
        return f"tiles {self.tile}px, overlap {self.overlap}px ({self.reason})"


def plan_tiles(handle, height: int, width: int, device, dtype=torch.float32, *, tile: int = 0,
               overlap: Optional[int] = None, free_bytes: Optional[int] = None,
               reserved_bytes: int = 0, bytes_per_pixel: Optional[float] = None,
               costs: Optional[CostTable] = None, batch: int = 1, extra_bytes: float = 0.0,
               slack: float = SLACK, floor: Optional[int] = None) -> TilePlan:
    """Choose the whole image or a tile side (module docstring).

    ``tile > 0`` forces that tile side (raised to the architecture's floor, on its grid);
    ``reserved_bytes`` is memory the caller will hold on the same device outside the plan (it shrinks
    the budget); ``extra_bytes`` is memory every plan adds (the output buffer, a weights copy);
    ``costs`` the model's measured table (else ``bytes_per_pixel``, or a memory probe); ``floor``
    replaces the architecture's smallest tile for a forced tile (the out-of-memory chain's halving).
    """
    device = torch.device(device)
    rule = tile_rule(handle, overlap)
    free = int(free_memory(device) if free_bytes is None else free_bytes)
    margin = SAFETY_MARGIN.get(device.type, 0.5)
    model_bytes = handle.parameter_bytes(dtype) if handle.device.type != device.type else 0
    budget = int(free * (1.0 - margin)) - int(reserved_bytes) - int(model_bytes)
    bpp = float(bytes_per_pixel or 0.0)

    if tile and tile > 0:  # a forced tile needs no measurement
        t = round_up(max(int(tile), rule.floor if floor is None else int(floor)), rule.align)
        note = f"tile {tile} requested" + (f", raised to {handle.arch}'s smallest tile {t}px" if t > tile else "")
        if t >= max(height, width):
            return TilePlan(None, 0, bpp, free, budget, f"{note}: covers the image")
        return TilePlan(t, rule.overlap, bpp, free, budget, note)

    if handle.tiling == "internal":
        return TilePlan(None, 0, bpp, free, budget, "the model tiles internally")
    if costs is None and bytes_per_pixel is None:
        bpp = probe_bytes_per_pixel(handle, device, dtype)
    opts = plan_options(height, width, rule, costs, batch=batch, multiple=handle.size_multiple,
                        min_size=handle.min_size, max_tile=MAX_TILE.get(device.type, 512),
                        extra_bytes=extra_bytes, bytes_per_pixel=bpp)
    note = ""
    discouraged = handle.tiling == "discouraged"
    if not discouraged and max(height, width) > MAX_TILE.get(device.type, 512) and any(o.tile is not None for o in opts):
        # the whole image only up to MAX_TILE: costs are measured on probes up to MAX_TILE, so a larger
        # whole image's time is an extrapolation, while its memory (activations for all of it) is
        # certain (4 MP SCUNet: predicted 30 % faster whole, ran no faster than 448 px tiles, 18x the memory)
        opts = [o for o in opts if o.tile is not None]
        note = f"; the whole image is not a plan above {MAX_TILE.get(device.type, 512)} px (not measured there)"

    if budget <= 0:
        raise OutOfMemoryError(
            f"not enough free memory on {device}: {format_bytes(free)} free, "
            f"{format_bytes(reserved_bytes)} needed for the output alone")
    pick, why = choose_fewest_seams(opts, budget) if discouraged else choose(opts, budget, slack)
    if pick is None:  # nothing predicted to fit: the smallest tile, and the out-of-memory chain after it
        pick = min(opts, key=lambda o: o.bytes)
        why = f"{why}; trying the smallest plan"
    why += note
    if discouraged and pick.tile is not None:
        why += "; seams are possible"
    if costs is not None and costs.has_memory and pick.max_px:
        bpp = costs.bytes(pick.max_px) / pick.max_px
    return TilePlan(pick.tile, rule.overlap if pick.tile else 0, bpp, free, budget, why,
                    predicted_bytes=pick.bytes, predicted_seconds=pick.seconds, options=opts)


def choose_fewest_seams(options: Sequence[PlanOption], budget: float):
    """The plan for an architecture that discourages tiling (per-image statistics, a global colour
    transform, Fourier branches: each tile would compute its own, so tiles can disagree): the whole
    image when it fits ``budget`` bytes, else the largest tile that does (fewest seams), whatever the
    speed.  Returns ``(option, reason)``; ``(None, reason)`` when none fits."""
    fits = [o for o in options if o.bytes <= budget]
    if not fits:
        return None, _nothing_fits(options, budget)
    whole = [o for o in fits if o.tile is None]
    if whole:
        return whole[0], (f"the whole image: the architecture discourages tiling, and it fits (needs "
                          f"~{format_bytes(whole[0].bytes)} of {format_bytes(budget)} budget)")
    pick = max(fits, key=lambda o: (o.tile, -o.tiles))
    return pick, (f"the largest tile within the {format_bytes(budget)} budget: the architecture discourages "
                  "tiling (fewest seams), and the whole image does not fit")


# --- measuring ---------------------------------------------------------------------------------------
def probe_bytes_per_pixel(handle, device, dtype=torch.float32, channels_last: bool = True) -> float:
    """Peak bytes per input pixel of one call on a small probe tile (random input), cached in the
    handle's cost table for ``device``/``dtype``/layout."""
    from .costs import table_for

    device = torch.device(device)
    table = table_for(handle, device, dtype, channels_last)
    if not table.has_memory:
        side = probe_side(handle)
        x = torch.rand(1, handle.in_channels, side, side, generator=torch.Generator().manual_seed(0))
        x = x.to(device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        module = handle.variant(device, dtype)
        measure_call(module, x, table, memory=True)
    side_px = min(p for p, _ in table.mems.values())
    return table.bytes(side_px) / side_px


def measure_costs(handle, module, table: CostTable, image: torch.Tensor, variant, device, *,
                  job_px: int, largest: int, budget_s: Optional[float] = None, check_interrupt=None) -> float:
    """Fill ``table`` on probe tiles cut from ``image``: sides from 64 px doubling up to ``largest``,
    one memory-tracked call and one timed call each, while the time spent stays within ``budget_s``
    (default :data:`PROBE_SHARE` of the job's predicted time).  Returns the seconds spent."""
    device = torch.device(device)
    t0 = time.perf_counter()
    for side in probe_sizes(handle.align, 0, max(64, largest)):
        side = round_up(max(side, handle.min_size), handle.align)
        px = side * side
        have_mem = any(abs(math.log2(p / px)) < 0.1 for p, _ in table.mems.values())
        have_time = any(abs(math.log2(p / px)) < 0.1 for p, _ in table.times.values())
        if have_mem and have_time:
            continue
        spent = time.perf_counter() - t0
        if table.has_time:
            per_job = table.seconds(job_px)
            allowed = PROBE_SHARE * per_job if budget_s is None else budget_s
            next_cost = 2 * table.seconds(px)
            if spent + next_cost > allowed:
                break
        if check_interrupt is not None:
            check_interrupt()
        x = probe_input(handle, image, side, variant.dtype, variant.channels_last, device)
        if not have_mem:
            measure_call(module, x, table, memory=True)
        if not have_time:
            measure_call(module, x, table, memory=False)
        del x
    return time.perf_counter() - t0
