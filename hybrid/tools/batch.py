"""Files and folders in, files out: the batch rules of ``restorekit restore`` and ``restorekit run``,
in one place, for the local loop here and for other engines (one task in -> output written + one
report row out, see :func:`process_task`).

Rules
-----
* **Inputs** are files and folders.  A folder gives its image files (by extension:
  :data:`scripts.image_io.IMAGE_EXTENSIONS`); other files are listed as skipped ("not an image
  file"); hidden files and folders (name starting with ``.``) are ignored.  Subfolders are listed as
  skipped unless ``recursive``, which walks them and mirrors the tree under the output folder.  A
  file named explicitly is always tried.
* **Own outputs are never inputs**: the output folder is never walked into, and a walked file whose
  name ends with one of this job's output suffixes (``x_restored.png``, ``x_restored_2.png``) and
  whose ``Software`` metadata says RestoreKit is skipped, so re-running into the input folder does not
  make ``x_restored_restored.png``.
* **Names**: ``<output>/<subfolder>/<stem><suffix>[_<output name>].<ext>``; the extension is the
  input's (``.gif`` becomes ``.png``) unless a format is given.  Two inputs of one run never share a
  name (the second gets ``_1``).
* **Existing outputs**: ``existing="rename"`` (default) never overwrites: a numbered free name is
  used (``x_restored_1.png``); ``"skip"`` skips the file (resumable runs); ``"overwrite"`` replaces
  it.  Inputs are never overwritten in any mode.  Files appear atomically (written beside the target,
  then moved), so an interrupted run leaves no half-written image.
* **Report**: one row per input (``status``: the job's done label, ``unchanged``, ``skipped`` or
  ``failed``, with ``reason``), a summary with counts and grouped reasons, written as JSON into the
  output folder under a name that never replaces an earlier report.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ...scripts import image_io

EXISTING_MODES = ("rename", "skip", "overwrite")
STATUSES = ("unchanged", "skipped", "failed")


@dataclass
class BatchOptions:
    """How a batch writes: output folder, tree walking, existing files, output format."""

    output_dir: str
    recursive: bool = False
    existing: str = "rename"                 # rename | skip | overwrite
    format: Optional[str] = None             # png/jpg/tif/webp/exr/bmp; None = the input's
    bit_depth: Optional[int] = None          # 8 / 16 / 32; None = the input's
    quality: int = image_io.DEFAULT_QUALITY  # JPEG / WebP
    suffix: str = "_restored"
    grey: str = "auto"

    def __post_init__(self):
        if self.existing not in EXISTING_MODES:
            raise ValueError(f"existing must be one of {', '.join(EXISTING_MODES)}, got {self.existing!r}")
        if self.format is not None and self.format.lower() not in image_io.FORMAT_NAMES:
            raise ValueError(f"unknown output format {self.format!r} (known: {', '.join(image_io.FORMAT_NAMES)})")
        if self.bit_depth not in (None, 8, 16, 32):
            raise ValueError(f"bit depth must be 8, 16 or 32, got {self.bit_depth!r}")
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"quality must be 1..100, got {self.quality}")
        if re.search(r"[\\/]", self.suffix):
            raise ValueError(f"suffix must not contain a path separator: {self.suffix!r}")


@dataclass
class Task:
    """One input file and the output paths planned for it (output name -> path)."""

    src: Optional[str]          # None: a processor that needs no input file
    rel_dir: str
    targets: Dict[str, str]
    explicit: bool = False


@dataclass
class Result:
    """What a processor returns for one image."""

    images: Dict[str, np.ndarray]            # output name ('' for the only one) -> float pixels
    fields: Dict[str, object] = field(default_factory=dict)   # extra report columns; "node_outputs":
    #                                          files a node wrote itself (listed with the outputs)
    text: str = ""                           # one line for the console
    changed: Optional[bool] = None           # None: compare the output with the input
    unchanged_reason: str = "output identical to the input"
    notes: List[str] = field(default_factory=list)


class Processor:
    """What a batch runs on each image.  Subclasses set :attr:`outputs` (names of the image outputs;
    ``[""]`` for one), :attr:`done_label` and :meth:`__call__`."""

    outputs: Sequence[str] = ("",)
    done_label: str = "restored"

    def __call__(self, image: image_io.ImageData) -> Result:  # pragma: no cover - interface
        raise NotImplementedError


# --- planning -----------------------------------------------------------------------------------------
def check_output_dir(path: str) -> str:
    """The output folder as an absolute path; ``ValueError`` when it names an existing file."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"-o '{path}' is an existing file; the output must be a folder (it is created if missing)")
    return path


def _stem_suffixes(options: BatchOptions, outputs: Sequence[str]) -> List[str]:
    return [options.suffix + (f"_{name}" if name else "") for name in outputs]


def is_own_output(path: str, options: BatchOptions, outputs: Sequence[str]) -> bool:
    """A file this kind of job wrote earlier: name ends with one of its suffixes (optionally ``_N``)
    and its ``Software`` metadata says RestoreKit."""
    stem = os.path.splitext(os.path.basename(path))[0]
    pattern = "(" + "|".join(re.escape(s) for s in _stem_suffixes(options, outputs) if s) + r")(_\d+)?$"
    if pattern == r"()(_\d+)?$" or not re.search(pattern, stem):
        return False
    return image_io.is_restorekit_output(path)


def _output_ext(src: str, options: BatchOptions) -> str:
    if options.format:
        return image_io.FORMAT_EXTENSION[image_io.FORMAT_NAMES[options.format.lower()]]
    ext = os.path.splitext(src)[1].lower()
    return ".png" if ext == ".gif" or ext not in image_io.IMAGE_EXTENSIONS else ext


def plan(inputs: Iterable[str], options: BatchOptions, outputs: Sequence[str] = ("",)
         ) -> Tuple[List[Task], List[Dict[str, object]]]:
    """Tasks for the image files in ``inputs`` and report rows for what is skipped (see the rules)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out_dir = check_output_dir(options.output_dir)
    found: List[Tuple[str, str, bool]] = []   # (path, rel_dir, explicit)
    skipped: List[Dict[str, object]] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            _walk(item, "", options, outputs, out_dir, found, skipped)
        elif os.path.isfile(item):
            found.append((item, "", True))
        else:
            raise FileNotFoundError(f"'{item}' is neither a file nor a folder")
    tasks, seen = [], set()
    inputs_real = {os.path.realpath(p) for p, _, _ in found}
    claimed = set(inputs_real)  # an input is never an output
    for path, rel, explicit in found:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        ext = _output_ext(path, options)
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.join(out_dir, rel)
        targets, skip_reason = {}, None
        for suffix, name in zip(_stem_suffixes(options, outputs), outputs):
            target = os.path.join(folder, f"{stem}{suffix}{ext}")
            mine = target in claimed or os.path.realpath(target) in claimed
            if not mine and os.path.exists(target) and options.existing == "skip":
                skip_reason = f"output exists ({os.path.basename(target)}); --skip-existing"
            elif mine or (os.path.exists(target) and options.existing == "rename"):
                target = _free_name(target, claimed)
            targets[name] = target
        if skip_reason:
            skipped.append(row(path, "skipped", skip_reason, category="output exists"))
            continue
        claimed.update(targets.values())
        tasks.append(Task(path, rel, targets, explicit))
    return tasks, skipped


def once_task(name: str, options: BatchOptions, outputs: Sequence[str] = ("",)) -> Task:
    """The task of a processor that needs no input file: outputs ``<output>/<name><suffix>.<ext>``
    (PNG unless a format is given), under the same existing-file rules."""
    out_dir = check_output_dir(options.output_dir)
    ext = _output_ext(name + ".png", options)
    targets = {}
    for suffix, out in zip(_stem_suffixes(options, outputs), outputs):
        target = os.path.join(out_dir, f"{name}{suffix}{ext}")
        if os.path.exists(target) and options.existing == "rename":
            target = _free_name(target, set(targets.values()))
        targets[out] = target
    return Task(None, "", targets, True)


def _walk(folder, rel, options, outputs, out_dir, found, skipped) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        skipped.append(row(folder, "skipped", f"cannot list the folder: {exc}", category="unreadable folder"))
        return
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            if os.path.realpath(path) == os.path.realpath(out_dir):
                skipped.append(row(path, "skipped", "the output folder", category="output folder"))
            elif options.recursive:
                _walk(path, os.path.join(rel, name), options, outputs, out_dir, found, skipped)
            else:
                skipped.append(row(path, "skipped", "subfolder (pass --recursive to include it)",
                                   category="subfolder"))
        elif not image_io.is_image_file(name):
            skipped.append(row(path, "skipped", f"not an image file ({os.path.splitext(name)[1] or 'no extension'})",
                               category="not an image file"))
        elif is_own_output(path, options, outputs):
            skipped.append(row(path, "skipped", "a RestoreKit output of an earlier run", category="own output"))
        else:
            found.append((path, rel, False))


def _free_name(path: str, taken: set) -> str:
    """``path`` or ``stem_1.ext``, ``stem_2.ext``… — never an existing file, never one in ``taken``."""
    stem, ext = os.path.splitext(path)
    cand, i = path, 0
    while os.path.exists(cand) or cand in taken or os.path.realpath(cand) in taken:
        i += 1
        cand = f"{stem}_{i}{ext}"
    return cand


# --- one task ------------------------------------------------------------------------------------------
def row(path: str, status: str, reason: str = "", category: str = "", **fields) -> Dict[str, object]:
    r: Dict[str, object] = {"input": path if path is not None else "(none: made from settings)", "status": status}
    if reason:
        r["reason"] = reason
        r["category"] = category or reason
    r.update(fields)
    return r


def process_task(task: Task, processor: Processor, options: BatchOptions) -> Dict[str, object]:
    """Read ``task.src``, run ``processor`` on it, write each output to its planned path; the report row.

    Never raises for a bad file: unreadable input or a processor error is a ``failed`` row with the
    reason (``KeyboardInterrupt`` and interrupts still stop the run).
    """
    t0 = time.perf_counter()
    if task.src is None:  # a node that makes images from its settings alone (runs once)
        data = None
    else:
        try:
            data = image_io.read_image(task.src)
        except ValueError as exc:
            return row(task.src, "failed", str(exc), category="unreadable image", seconds=_secs(t0))
    meta = data.meta if data is not None else image_io.ImageMeta(bit_depth=16)
    try:
        result = processor(data)
    except Exception as exc:  # one failing file must not stop the batch
        return row(task.src, "failed", f"{type(exc).__name__}: {exc}", category=f"{type(exc).__name__} while processing",
                   seconds=_secs(t0))
    written, notes = [], list(meta.notes) + list(result.notes)
    try:
        for name, pixels in result.images.items():
            for i, px in enumerate(_as_list(pixels)):
                target = task.targets.get(name) or _extra_target(task, name, options)
                if i:
                    stem, ext = os.path.splitext(target)
                    target = f"{stem}_{i}{ext}"
                w = _write(target, px, meta, options)
                written.append(w.path)
                notes.extend(w.notes)
    except (ValueError, OSError) as exc:
        return row(task.src, "failed", f"cannot write the output: {exc}", category="write error",
                   outputs=written, seconds=_secs(t0))
    written += [p for p in result.fields.pop("node_outputs", []) if p not in written]  # files nodes wrote
    changed = result.changed
    if changed is None and data is None:
        changed = True
    if changed is None:
        changed = not all(_same(p, data.pixels) for v in result.images.values() for p in _as_list(v)) \
            if result.images else True
    status = processor.done_label if changed else "unchanged"
    # the summary groups rows by category: the reason's headline, before its per-image details
    r = row(task.src, status, "" if changed else result.unchanged_reason,
            category="" if changed else result.unchanged_reason.split(":")[0], outputs=written, **result.fields)
    if result.text:
        r["summary"] = result.text
    if notes:
        r["notes"] = sorted(set(notes), key=notes.index)
    r["seconds"] = _secs(t0)
    return r


def _as_list(pixels):
    arr = np.asarray(pixels)
    return [arr[i] for i in range(arr.shape[0])] if arr.ndim == 4 else [arr]


def _same(out: np.ndarray, src: np.ndarray) -> bool:
    out = np.asarray(out)
    if out.shape[:2] != src.shape[:2]:
        return False
    if out.ndim == 2:
        out = out[..., None]
    c = min(out.shape[-1], src.shape[-1])
    return out.shape[-1] == src.shape[-1] and bool(np.array_equal(out[..., :c], src[..., :c]))


def _extra_target(task: Task, name: str, options: BatchOptions) -> str:
    first = next(iter(task.targets.values()))
    stem, ext = os.path.splitext(first)
    return _free_name(f"{stem}_{name}{ext}", set(task.targets.values()))


def _write(target: str, px, meta, options: BatchOptions):
    overwrite = options.existing == "overwrite"
    kw = dict(bit_depth=options.bit_depth, quality=options.quality, grey=options.grey)
    try:
        return image_io.write_image(target, px, meta, overwrite=overwrite, **kw)
    except FileExistsError:  # appeared since planning (another process): never overwrite it
        return image_io.write_image(_free_name(target, set()), px, meta, overwrite=False, **kw)


def _secs(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


# --- the local loop and the report ------------------------------------------------------------------
def summarise(rows: List[Dict[str, object]], done_label: str) -> Dict[str, object]:
    """Counts per status (``done_label``, unchanged, skipped, failed) and reasons grouped by category."""
    counts = {s: 0 for s in (done_label,) + STATUSES}
    reasons: Dict[str, Counter] = {s: Counter() for s in STATUSES}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] in reasons:
            reasons[r["status"]][str(r.get("category") or r.get("reason", ""))] += 1
    return {"counts": counts, "reasons": {s: dict(c) for s, c in reasons.items() if c}}


def format_summary(summary: Dict[str, object]) -> str:
    """The end-of-run table: one line per status with its count and grouped reasons."""
    lines = ["summary:"]
    for status, n in summary["counts"].items():
        why = summary["reasons"].get(status, {})
        detail = "; ".join(f"{k} ({v})" for k, v in why.items())
        lines.append(f"  {status:<10} {n:>6}" + (f"   {detail}" if detail else ""))
    return "\n".join(lines)


def run_batch(inputs, processor: Processor, options: BatchOptions, *, progress: bool = True,
              report_name: str = "restore_report.json", extra: Optional[Dict[str, object]] = None,
              on_row: Optional[Callable[[Dict[str, object]], None]] = None,
              once_name: Optional[str] = None) -> Dict[str, object]:
    """Plan, process every task with :func:`process_task`, write the JSON report; return it.

    ``inputs=None`` runs the processor once without an input file (outputs named ``once_name``).

    The report: ``{"files": rows, "summary": {...}, <done_label>: n, "unchanged": n, "skipped": n,
    "failed": n, "report": path, "options": {...}}`` plus ``extra``.  ``on_row`` sees each row as it
    is made (the CLI prints it).
    """
    if inputs is None:  # a processor that needs no input file runs once
        task = once_task(once_name or "output", options, processor.outputs)
        exists = [t for t in task.targets.values() if os.path.exists(t)]
        if options.existing == "skip" and exists:
            tasks, rows = [], [row(exists[0], "skipped", "output exists; --skip-existing", category="output exists")]
        else:
            tasks, rows = [task], []
    else:
        tasks, rows = plan(inputs, options, processor.outputs)
    for r in rows:
        if on_row:
            on_row(r)
    os.makedirs(options.output_dir, exist_ok=True)
    bar = _bar(len(tasks)) if progress else None
    for task in tasks:
        r = process_task(task, processor, options)
        rows.append(r)
        if on_row:
            on_row(r)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(os.path.basename(task.src or once_name or ""))
    if bar is not None:
        bar.close()
    return finish_report(rows, processor.done_label, options, report_name, extra)


def finish_report(rows: List[Dict[str, object]], done_label: str, options: BatchOptions,
                  report_name: str, extra: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The run's report from its rows (summary, counts, options, ``extra``), written as JSON into the
    output folder (:func:`write_report`); any engine ends a batch with this."""
    summary = summarise(rows, done_label)
    report = {"files": rows, "summary": summary, **summary["counts"],
              "options": asdict(options), **(extra or {})}
    report["report"] = write_report(report, options.output_dir, report_name)
    return report


def write_report(report: Dict[str, object], output_dir: str, name: str) -> str:
    """Write ``report`` as JSON under a free name in ``output_dir`` (an earlier report is kept)."""
    path = _free_name(os.path.join(output_dir, name), set())
    report = dict(report, report=path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    return path


def _bar(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="files", unit="img", file=sys.stderr, disable=None)
    except Exception:
        return None


#: images of at least this many pixels show a progress bar over the restorer's stages (CLI)
STAGE_PROGRESS_MIN_PIXELS = 2_000_000


def _short(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def step_text(step: Dict[str, object]) -> str:
    """One step of a restoration as ``stage(key=value, ...)`` for the console: its scalar parameters
    (arrays and long lists left out; nested operations as ``name(...)``), with the backend that
    actually ran from its result when the step reports one."""
    def scalars(params) -> List[str]:
        parts = []
        for key, value in (params or {}).items():
            if isinstance(value, (bool, int, float)) or (isinstance(value, str) and not value.startswith("array[")):
                parts.append(f"{key}={_short(value)}")
            elif isinstance(value, (list, tuple)) and value and all(
                    isinstance(op, (list, tuple)) and len(op) == 2 and isinstance(op[0], str) for op in value):
                parts.append(", ".join(f"{op[0]}({', '.join(scalars(op[1]))})" for op in value))
        return parts

    params = dict(step.get("params") or {})
    result = step.get("result") or {}
    if isinstance(result, dict) and result.get("backend"):
        params["backend"] = result["backend"]
    return f"{step['stage']}({', '.join(scalars(params))})"


def restore_steps(info) -> Dict[str, object]:
    """The report columns of one :meth:`hybrid.engine.HybridRestorer.restore` call: ``steps`` (each
    stage that ran with its parameters, why, what it did and its time; JSON-ready) and, for the plan,
    ``skipped`` (each stage not run and why)."""
    from ..defects import jsonable

    params = info.parameters or {}
    runner = params.get("runner")
    run_fields = {}
    if runner is not None and hasattr(runner, "info_fields"):
        f = runner.info_fields()
        run_fields = {k: str(f[k]) for k in ("device", "tile", "precision") if f.get(k) is not None}
    model = {"model": os.path.basename(str(params["model"]))} if params.get("model") else {}
    execution = params.get("execution")
    if isinstance(execution, dict):  # the plan: its execution report already says it all
        steps = list(execution.get("stages") or [])
        blend = params.get("blend")
        if isinstance(blend, dict):  # auto mixed the plan's result with the U-Net's (hybrid/blend.py)
            shown = {k: v for k, v in blend.items() if k not in ("why", "model")}
            steps.append({"stage": "U-Net blend", "params": jsonable({**shown, **run_fields}), "why": blend.get("why", "")})
        if info.method == "deep_learning":  # the U-Net path: the stages the U-Net cannot do, then the U-Net
            steps.append({"stage": "U-Net", "params": jsonable({**model, **run_fields}),
                          "why": "the U-Net path: " + str((params.get("route") or {}).get("because")
                                                          or "the strategy asked for it")})
        return {"steps": steps, "skipped": list(execution.get("skipped") or [])}
    shown = {k: v for k, v in params.items() if k not in ("runner", "why", "model", "no_change")}
    shown.update(model)
    shown.update(run_fields)
    why = params.get("why", "")
    return {"steps": [{"stage": st, "params": jsonable(shown), "why": why} for st in (info.stages or [])]}


class _StageBar:
    """The restorer's ``progress(done, total, stage)`` as a tqdm bar on stderr (one image's stages)."""

    def __init__(self, name: str):
        self.name, self.bar = name, None

    def __call__(self, done: int, total: int, stage: str) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=f"{self.name} stages", unit="stage", file=sys.stderr, leave=False,
                            disable=None)
        self.bar.set_postfix_str(stage)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RestoreProcessor(Processor):
    """The hybrid restorer (:class:`hybrid.engine.HybridRestorer`) as a batch processor.

    Each row says which stages ran with which parameters (``steps``, ``skipped``; the console line
    lists them as ``stage(key=value, ...)``), or ``unchanged`` and why.  ``progress``: a bar over the
    stages of images of at least :data:`STAGE_PROGRESS_MIN_PIXELS` pixels (the U-Net shows its own
    per-tile bar when the restorer was made with ``progress=True``)."""

    outputs = ("",)
    done_label = "restored"

    def __init__(self, restorer, strategy: str = "auto", progress: bool = False):
        self.restorer = restorer
        self.strategy = strategy
        self.progress = bool(progress)

    def __call__(self, image: image_io.ImageData) -> Result:
        px = image.pixels
        bar = None
        if self.progress and px.shape[0] * px.shape[1] >= STAGE_PROGRESS_MIN_PIXELS:
            bar = _StageBar(os.path.basename(image.path) or "image")
        try:
            out, info = self.restorer.restore(px, self.strategy, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        params = info.get("parameters") or {}
        q = round(float(info.analysis.quality_db), 2)
        stages = list(info.stages or [])
        detail = restore_steps(info)
        fields = {"method": info.method, "severity": info.severity, "quality_db": q, "stages": stages, **detail}
        unchanged = bool(info.unchanged or params.get("no_change"))
        text = (f"{info.severity} -> {info.method}"
                + (f": {' -> '.join(step_text(st) for st in detail['steps'])}" if stages else
                   " (unchanged)" if unchanged else "")
                + f", quality estimate {q} dB")
        why = info.reason or params.get("why")
        return Result({"": out}, fields, text, changed=False if unchanged else None,
                      unchanged_reason=str(why or "output identical to the input"),
                      notes=list(info.get("notes") or []))
