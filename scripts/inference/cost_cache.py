"""Measured costs kept across processes: a small JSON file per model in the user's cache folder.

A fresh process (a restarted ComfyUI, a CLI call) would otherwise measure the fast path and the
tile costs of a model again before every first job: seconds that a small job cannot earn back.
:func:`load` fills a :class:`~scripts.inference.handle.ModelHandle`'s cost tables
(:class:`~scripts.inference.costs.CostTable`) and fast-path choices
(:class:`~scripts.inference.fastpath.Selection`) from the file measured earlier on the same machine;
:func:`save` writes them back after a run that measured something new.

* **Where**: ``<cache folder>/costs-v1/<model hash>.json``; the folder comes from the host
  (:meth:`PlainRuntime.cache_dir <scripts.inference.runtime.PlainRuntime.cache_dir>`: inside ComfyUI
  ``<user directory>/restorekit/cache``, else the platform's cache folder;
  ``RESTOREKIT_COST_CACHE_DIR`` names another, ``off`` turns caching off; else ``RESTOREKIT_CACHE_DIR``,
  the pack's cache folder, when set).
* **Keys**: the file is named by a hash of the network's weights (names, dtypes, shapes and bytes)
  and its architecture; inside it, entries are keyed by the environment measurements depend on —
  torch version, device (and the CPU's or GPU's name), torch's thread count and whether the CPU has
  native bf16.  Another machine's or another torch's entries are kept but never used.
* **Safety**: writes go to a temporary file that replaces the old one atomically; a file that
  cannot be read, is not valid JSON, or belongs to another model or format is ignored (and
  replaced at the next save) with a note in the run's report — never an error.

What is stored is what was measured: per variant the fastest time and the peak memory per size
bucket, and per precision the chosen variant with its measured seconds and accuracy figures.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from typing import Optional

import torch

from .costs import CostTable, table_for
from .runtime import get_runtime

FORMAT = "restorekit-costs"
VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_hash(handle) -> str:
    """Hash of ``handle``'s architecture and weights (hex; computed once per handle)."""
    with handle._lock:
        cached = handle.costs.get("model_hash")
    if cached:
        return cached
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{handle.arch}|{type(handle.module).__name__}|{handle.scale}".encode())
    for name, t in handle.module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's bytes, not a copy
    digest = h.hexdigest()
    with handle._lock:
        handle.costs["model_hash"] = digest
    return digest


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_key(device) -> str:
    """What measured costs depend on besides the model: torch, the device and its threads."""
    from .fastpath import native_bf16_cpu

    device = torch.device(device)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{_cpu_name()}; {torch.get_num_threads()} threads; bf16 {'native' if native_bf16_cpu() else 'no'}"
    return f"torch {torch.__version__}; {device}; {what}"


def cache_path(handle) -> Optional[str]:
    """The cache file of ``handle``, or None when the host has no cache folder (caching off)."""
    folder = get_runtime().cache_dir()
    if not folder:
        return None
    return os.path.join(folder, f"costs-v{VERSION}", model_hash(handle) + ".json")


def _read(path: str, digest: str):
    """``(document, note)``: the cache file's contents, or ``(None, why it is ignored)``."""
    if not os.path.exists(path):
        return None, ""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        return None, f"ignored unreadable cost cache {path} ({type(exc).__name__})"
    if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") == VERSION
            and doc.get("model") == digest and isinstance(doc.get("entries"), dict)):
        return None, f"ignored cost cache {path}: another format or model"
    return doc, ""


def _table_key(dtype: torch.dtype, channels_last: bool) -> str:
    return f"{str(dtype).replace('torch.', '')}|{'cl' if channels_last else 'nchw'}"


def _selection_to_json(sel) -> dict:
    v = sel.variant
    return {"dtype": str(v.dtype).replace("torch.", ""), "channels_last": bool(v.channels_last),
            "measured": bool(sel.measured), "reason": str(sel.reason), "probe": int(sel.probe),
            "seconds": {k: float(t) for k, t in sel.seconds.items()},
            "differences": {k: [float(a), float(b)] for k, (a, b) in sel.differences.items()}}


def _selection_from_json(d: dict):
    from .fastpath import Selection, Variant

    variant = Variant(_DTYPES[d["dtype"]], bool(d["channels_last"]))
    return Selection(variant, measured=bool(d["measured"]), reason=str(d["reason"]), probe=int(d["probe"]),
                     seconds={str(k): float(t) for k, t in d["seconds"].items()},
                     differences={str(k): (float(a), float(b)) for k, (a, b) in d["differences"].items()})


def _snapshot(handle, device) -> dict:
    """This handle's measurements on ``device`` as a JSON entry."""
    from .fastpath import _key as select_key
    from .fastpath import PRECISIONS

    device = torch.device(device)
    tables, selections = {}, {}
    with handle._lock:
        items = list(handle.costs.items())
    for key, value in items:
        if isinstance(key, tuple) and key[0] == "costs" and key[1] == str(device) and isinstance(value, CostTable):
            dtype = _DTYPES.get(key[2].replace("torch.", ""))
            if dtype is None or not (value.times or value.mems):
                continue
            with value._lock:
                tables[_table_key(dtype, key[3])] = {"times": sorted(value.times.values()),
                                                     "mems": sorted(value.mems.values())}
    for precision in PRECISIONS:
        with handle._lock:
            sel = handle.costs.get(select_key(device, precision))
        if sel is not None and sel.measured:
            selections[precision] = _selection_to_json(sel)
    return {"tables": tables, "selections": selections}


def load(handle, device) -> str:
    """Fill ``handle``'s empty cost tables and fast-path choices on ``device`` from its cache file
    (once per handle and device).  Returns a note for the run's report ("" when nothing happened)."""
    from .fastpath import _key as select_key

    device = torch.device(device)
    mark = ("cache loaded", str(device))
    with handle._lock:
        if handle.costs.get(mark):
            return ""
        handle.costs[mark] = True
    try:
        path = cache_path(handle)
    except Exception as exc:  # noqa: BLE001 - a cache never fails a run
        return f"cost cache unavailable ({type(exc).__name__}: {exc})"
    if path is None:
        return "cost cache off"
    doc, note = _read(path, model_hash(handle))
    if doc is None:
        return note
    entry = doc["entries"].get(environment_key(device))
    if not isinstance(entry, dict):
        return ""
    try:
        loaded = 0
        for key, t in entry.get("tables", {}).items():
            dname, layout = key.split("|")
            table = table_for(handle, device, _DTYPES[dname], layout == "cl")
            for px, s in t.get("times", []):
                table.add_time(int(px), float(s))
            for px, b in t.get("mems", []):
                table.add_memory(int(px), float(b))
            loaded += 1
        for precision, d in entry.get("selections", {}).items():
            sel = _selection_from_json(d)
            with handle._lock:
                handle.costs.setdefault(select_key(device, precision), sel)
            loaded += 1
    except (KeyError, TypeError, ValueError) as exc:
        return f"ignored a damaged entry of the cost cache {path} ({type(exc).__name__})"
    text = json.dumps(_snapshot(handle, device), sort_keys=True)
    with handle._lock:
        handle.costs[("cache saved", str(device))] = text
    return f"measured costs from the cache {path}" if loaded else ""


def save(handle, device) -> str:
    """Write ``handle``'s measurements on ``device`` to its cache file when they changed since the last
    load or save (atomically; other environments' entries are kept).  Returns a note ("" when
    nothing was written)."""
    device = torch.device(device)
    try:
        path = cache_path(handle)
        if path is None:
            return ""
        entry = _snapshot(handle, device)
        if not entry["tables"] and not entry["selections"]:
            return ""
        text = json.dumps(entry, sort_keys=True)
        mark = ("cache saved", str(device))
        with handle._lock:
            if handle.costs.get(mark) == text:
                return ""
        digest = model_hash(handle)
        doc, _note = _read(path, digest)
        if doc is None:
            doc = {"format": FORMAT, "version": VERSION, "model": digest, "arch": handle.arch, "entries": {}}
        doc["entries"][environment_key(device)] = entry
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".costs-", suffix=".tmp", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        with handle._lock:
            handle.costs[mark] = text
        return f"measured costs saved to the cache {path}"
    except Exception as exc:  # noqa: BLE001 - a cache never fails a run
        return f"cost cache not written ({type(exc).__name__}: {exc})"
