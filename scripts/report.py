"""Reports: what a library call did, as data, and the one place that turns them into text.

Every function a node calls returns ``(result, report)`` where ``report`` is a dataclass.  Tests,
the CLI and the hybrid planner read its fields; a node shows it as its ``info`` string through
:func:`info_text`, the only formatter in the pack.

Fields are shown in declaration order as ``label: value`` lines (a report whose display combines
fields defines ``info_fields() -> {label: value}`` instead).  :func:`shown` sets a field's label,
a format (a format spec such as ``".3f"``, or a function) or hides it; ``None`` values are left out;
a nested report contributes its own lines; floats are written with 4 significant digits, lists of
text joined by ``"; "``, dicts as JSON.  A list of reports of the same type (one per image of a
batch) becomes one line per field: the common value when every image has the same one, else the
values separated by ``" | "`` in image order.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, List, Optional, Union

Format = Union[str, Callable[[Any], Any], None]


def shown(label: Optional[str] = None, fmt: Format = None, hidden: bool = False, default=dataclasses.MISSING,
          default_factory=dataclasses.MISSING):
    """A dataclass field with display metadata for :func:`info_text`."""
    meta = {"label": label, "fmt": fmt, "hidden": hidden}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return "; ".join(value)
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _formatted(value: Any, fmt: Format) -> Any:
    if fmt is None or value is None:
        return value
    if callable(fmt):
        return fmt(value)
    return format(value, fmt)


def fields_of(report: Any) -> Dict[str, Any]:
    """``{label: display value}`` of one report (dataclass, dict or a list of same-type reports)."""
    if report is None:
        return {}
    if isinstance(report, dict):
        return {k: v for k, v in report.items() if v is not None}
    if isinstance(report, (list, tuple)) and report and all(dataclasses.is_dataclass(r) for r in report):
        return _merged([fields_of(r) for r in report])
    if not dataclasses.is_dataclass(report):
        raise TypeError(f"not a report: {type(report).__name__}")
    if hasattr(report, "info_fields"):
        return {k: v for k, v in report.info_fields().items() if v is not None}
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(report):
        meta = f.metadata or {}
        if meta.get("hidden") or f.name.startswith("_"):
            continue
        value = getattr(report, f.name)
        if dataclasses.is_dataclass(value) or (isinstance(value, list) and value
                                               and all(dataclasses.is_dataclass(v) for v in value)):
            out.update(fields_of(value))
            continue
        value = _formatted(value, meta.get("fmt"))
        if value is None:
            continue
        out[meta.get("label") or f.name.replace("_", " ")] = value
    return out


def _merged(per_item: List[Dict[str, Any]]) -> Dict[str, Any]:
    if len(per_item) == 1:
        return per_item[0]
    out: Dict[str, Any] = {}
    for key in per_item[0]:
        values = [d.get(key) for d in per_item]
        texts = [_value_text(v) for v in values]
        out[key] = values[0] if len(set(texts)) == 1 else " | ".join(texts)
    return out


def info_text(title: str, *parts: Any) -> str:
    """The ``info`` text of a node: a title line, then ``label: value`` lines from each part
    (reports, lists of per-image reports, or dicts of extra fields), later parts overriding."""
    merged: Dict[str, Any] = {}
    for part in parts:
        merged.update(fields_of(part))
    lines = [title] + [f"{key}: {_value_text(value)}" for key, value in merged.items()]
    return "\n".join(lines)
