"""Fast paths: the precision and memory layout a network runs in, chosen by measurement.

Candidates per device (:func:`candidates`), filtered by what the architecture supports
(``ModelHandle.supports_half`` / ``supports_bfloat16``) and the user's ``precision``:

* memory layout: channels-last and contiguous NCHW, on every device (oneDNN on the CPU and cuDNN
  run most convolutions faster channels-last, a few networks run slower);
* ``auto`` adds bf16 on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX: oneDNN reports it),
  fp16 on CUDA; ``fp32`` keeps fp32; ``bf16`` / ``fp16`` keep the user's choice (fp16 is never used on
  the CPU, bf16 on CUDA only where the GPU supports it).

:func:`select` runs every candidate on a probe tile cut from the user's own image (one warm-up call
that also measures memory, then alternating timed rounds, the fastest call kept), compares every
reduced-precision output with the fp32 one, and picks the fastest.  Under ``auto`` a reduced
precision is chosen only when it is at least :data:`MIN_GAIN` faster than the best fp32 path *and*
its output is within the architecture's tolerance (``ModelHandle.reduced_tolerance``: mean and
99.9th-percentile absolute difference on the probe tile, 0..1 units).  The choice is cached on the
handle per device and precision.  Reduced precision always runs on a copy of the model
(:meth:`ModelHandle.variant`), never by converting the loaded one.

Measuring costs a few calls on a 64 px tile; images too small for that to pay off run the default
path (fp32 channels-last, or the user's precision) without measuring.  What was measured persists
across processes (:mod:`scripts.inference.cost_cache`), so a restarted host does not measure again.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .costs import measure_call, probe_input, probe_side, table_for

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
#: a reduced precision must be at least this much faster than fp32 to be chosen under ``auto``
MIN_GAIN = 0.05
#: a job's candidates are timed only when it computes at least this many probe tiles' worth of pixels
#: (timing every candidate costs ~20 probe-tile calls; below this it would cost more than 10 % of the job)
MEASURE_MIN_TILES = 200
#: below that, a job of at least this many probe tiles still checks a native reduced precision's
#: accuracy against fp32 (one call each) and uses it when within the tolerance (not timed: native
#: bf16/fp16 arithmetic is assumed faster, as measured on AMX/AVX512-BF16 CPUs and CUDA).  The check
#: costs two probe calls once per model and machine (its result persists in the cost cache,
#: :mod:`scripts.inference.cost_cache`) and saves ~40 % of every later job's time
CHECK_MIN_TILES = 6
#: timed rounds per candidate (alternating)
ROUNDS = 2


@dataclass(frozen=True)
class Variant:
    """One way to run a network: its dtype and the memory layout of its input."""

    dtype: torch.dtype = torch.float32
    channels_last: bool = True

    @property
    def precision(self) -> str:
        return _NAMES.get(self.dtype, str(self.dtype))

    @property
    def reduced(self) -> bool:
        return self.dtype != torch.float32

    @property
    def name(self) -> str:
        return f"{self.precision} {'channels-last' if self.channels_last else 'NCHW'}"


def native_bf16_cpu() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    if os.environ.get("RESTOREKIT_NO_BF16"):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch: read the CPU flags
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
            return "avx512_bf16" in flags or "amx_bf16" in flags
        except OSError:
            return False


def _cuda_bf16(device: torch.device) -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def candidates(handle, device, precision: str) -> Tuple[List[Variant], List[str]]:
    """The variants worth trying for ``handle`` on ``device`` under the user's ``precision``, the
    default first, and notes on choices that cannot be honoured."""
    device = torch.device(device)
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    notes: List[str] = []
    layouts = (True, False)
    fp32 = [Variant(torch.float32, cl) for cl in layouts]
    if precision == "fp32":
        return fp32, notes
    if precision in ("fp16", "bf16"):
        dtype = _DTYPES[precision]
        supported = handle.supports_half if precision == "fp16" else handle.supports_bfloat16
        if not supported:
            notes.append(f"{precision} not supported by {handle.arch}: used fp32")
            return fp32, notes
        if device.type == "cpu" and precision == "fp16":
            notes.append("fp16 is not used on the CPU: used fp32")
            return fp32, notes
        if device.type == "cuda" and precision == "bf16" and not _cuda_bf16(device):
            notes.append("this GPU has no bf16: used fp32")
            return fp32, notes
        if device.type == "cpu" and precision == "bf16" and not native_bf16_cpu():
            notes.append("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 runs emulated and slowly")
        return [Variant(dtype, cl) for cl in layouts], notes
    # auto
    reduced: List[Variant] = []
    if device.type == "cpu" and handle.supports_bfloat16 and native_bf16_cpu():
        reduced = [Variant(torch.bfloat16, True)]
    elif device.type == "cuda" and handle.supports_half:
        reduced = [Variant(torch.float16, cl) for cl in layouts]
    return fp32 + reduced, notes


@dataclass
class Selection:
    """The variant a run uses and why: measured seconds per candidate on the probe tile, the
    reduced-precision differences from fp32 ``(mean, p99.9)``, and the reason in words."""

    variant: Variant
    measured: bool = False
    reason: str = ""
    probe: int = 0
    seconds: Dict[str, float] = field(default_factory=dict)
    differences: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    probe_seconds: float = 0.0

    def describe(self) -> str:
        if not self.measured:
            return f"{self.variant.name} ({self.reason})"
        times = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        diffs = "; ".join(f"{k} vs fp32: mean {m:.1e}, p99.9 {p:.1e}" for k, (m, p) in self.differences.items())
        what = f"measured on a {self.probe} px tile of the image: {times}" if times else \
            f"checked on a {self.probe} px tile of the image"
        return f"{self.variant.name} ({self.reason}; {what}" + (f"; {diffs}" if diffs else "") + ")"


def _difference(out: torch.Tensor, ref: torch.Tensor, clamp: bool) -> Tuple[float, float]:
    a, b = out.float(), ref.float()
    if clamp:
        a, b = a.clamp(0, 1), b.clamp(0, 1)
    d = (a - b).abs().flatten()
    if not bool(torch.isfinite(d).all()):
        return float("inf"), float("inf")
    if d.numel() > 1 << 22:
        d = d[:: d.numel() // (1 << 22) + 1]
    k = max(1, int(round(0.999 * d.numel())))
    return float(d.mean()), float(d.kthvalue(k).values)


def _key(device: torch.device, precision: str) -> tuple:
    return ("select", str(device), precision)


def cached(handle, device, precision: str) -> Optional[Selection]:
    with handle._lock:
        return handle.costs.get(_key(torch.device(device), (precision or "auto").lower()))


def select(handle, device, precision: str, image: torch.Tensor, *, job_px: int = 0,
           measure: Optional[bool] = None, check_interrupt=None,
           check_only: Optional[bool] = None) -> Tuple[Selection, List[str]]:
    """Choose the variant to run ``handle`` in (module docstring); returns ``(selection, notes)``.

    ``image``: the IMAGE batch ``[B, H, W, C_in]`` the probe tile is cut from; ``job_px``: input pixels
    the job will compute (decides whether measuring pays off); ``measure``: force (True) or skip
    (False) measuring, None = decide from the job size; ``check_only``: without timing, check the
    reduced precision's accuracy only (None = decide from the job size).
    """
    device = torch.device(device)
    precision = (precision or "auto").lower()
    cands, notes = candidates(handle, device, precision)
    hit = cached(handle, device, precision)
    if hit is not None:
        return dataclasses.replace(hit, probe_seconds=0.0), notes
    default = cands[0]
    if len(cands) == 1:
        return Selection(default, reason="the only path"), notes
    side = probe_side(handle)
    if measure is None:
        measure = job_px >= MEASURE_MIN_TILES * side * side
    if check_only is None:
        check_only = not measure and job_px >= CHECK_MIN_TILES * side * side
    check_only = bool(check_only) and not measure and precision == "auto"
    if check_only:  # the default and the native reduced precision in the same layout, one call each
        cands = [default] + [v for v in cands if v.reduced and v.channels_last == default.channels_last][:1]
        if len(cands) == 1:
            return Selection(default, reason="default; no native reduced precision here"), notes
    elif not measure:
        return Selection(default, reason="default; the image is too small for measuring to pay off"), notes

    t_start = time.perf_counter()
    outs: Dict[Variant, torch.Tensor] = {}
    best: Dict[Variant, float] = {}
    for rnd in range(1 if check_only else ROUNDS + 1):
        for v in cands:
            if check_interrupt is not None:
                check_interrupt()
            module = handle.variant(device, v.dtype)
            x = probe_input(handle, image, side, v.dtype, v.channels_last, device)
            table = table_for(handle, device, v.dtype, v.channels_last)
            # round 0: warm-up that measures memory; then timed rounds, alternating the candidates
            y, seconds, _peak = measure_call(module, x, table, memory=(rnd == 0))
            if rnd == 0:
                outs[v] = y.detach().to("cpu", torch.float32)
            else:
                best[v] = min(best.get(v, float("inf")), seconds)
            del y, x
    sel = Selection(default, measured=True, probe=side,
                    seconds={v.name: t for v, t in best.items()})
    fp32s = [v for v in cands if not v.reduced]
    ref_v = (min(fp32s, key=lambda v: best[v]) if not check_only else fp32s[0]) if fp32s else None
    tol_mean, tol_p999 = handle.reduced_tolerance
    accepted = []
    for v in cands:
        if not v.reduced:
            continue
        if ref_v is not None:
            diff = _difference(outs[v], outs[ref_v], handle.clamp)
            sel.differences[v.name] = diff
            if diff[0] <= tol_mean and diff[1] <= tol_p999:
                accepted.append(v)
        else:
            accepted.append(v)
    if check_only:
        choice = accepted[0] if accepted else default
        sel.reason = (f"native {choice.precision}, within {handle.arch}'s tolerance (mean {tol_mean:.0e}, p99.9 "
                      f"{tol_p999:.0e}); not timed (the job is too small for timing to pay off)" if accepted else
                      f"default; {cands[1].precision} outside {handle.arch}'s tolerance (mean {tol_mean:.0e}, "
                      f"p99.9 {tol_p999:.0e})")
    elif precision in ("fp16", "bf16"):
        choice = min(cands, key=lambda v: best[v])
        sel.reason = f"{precision} requested; the faster layout"
    else:
        choice = ref_v
        sel.reason = "the fastest fp32 layout"
        fast = min(accepted, key=lambda v: best[v]) if accepted else None
        if fast is not None and best[fast] <= (1.0 - MIN_GAIN) * best[ref_v]:
            choice = fast
            sel.reason = (f"{fast.precision} is {best[ref_v] / best[fast]:.2f}x faster than fp32 and within "
                          f"{handle.arch}'s tolerance (mean {tol_mean:.0e}, p99.9 {tol_p999:.0e})")
        else:
            rejected = [v for v in cands if v.reduced and v not in accepted]
            if rejected:
                sel.reason += (f"; {rejected[0].precision} outside {handle.arch}'s tolerance "
                               f"(mean {tol_mean:.0e}, p99.9 {tol_p999:.0e})")
            elif fast is not None:
                sel.reason += f"; {fast.precision} not at least {MIN_GAIN:.0%} faster"
    sel.variant = choice
    for v in cands:  # keep only the copy that will be used
        if v.reduced and v.dtype != choice.dtype:
            with handle._lock:
                handle._variants.pop((str(device), v.dtype), None)
    sel.probe_seconds = time.perf_counter() - t_start
    with handle._lock:
        handle.costs[_key(device, precision)] = sel
    return sel, notes
