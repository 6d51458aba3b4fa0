"""Any node of the pack, or a whole API workflow, run on image files from the shell or from Python.

``restorekit run NODE INPUT... -o OUT [--set name=value ...] [--input socket=FILE ...]`` runs one node
on every input file with the node's own defaults, validation and info text; ``restorekit run
--workflow X.json [INPUT...] -o OUT [--set ID.name=value ...]`` runs an API prompt in-process (core
LoadImage reads the input file, core SaveImage writes through the batch rules of :mod:`.batch`).

How a node's inputs are filled (:class:`NodeProcessor`):

* the node's first IMAGE socket gets each input file as ``[1, H, W, C]`` float32 0..1 (C = 1 for
  grey, 3, or 4 with alpha; 16-bit files keep their precision);
* a node without an IMAGE socket but with a file widget (``image_upload``, e.g. Load Image
  (16-bit/float)) gets each input file there; a node with neither runs once;
* widgets: the declared default unless ``--set name=value`` (checked against type, range and
  choices exactly as ComfyUI checks an API prompt);
* other IMAGE / MASK sockets: ``--input name=FILE`` (a MASK file is read as grey, white = 1);
* sockets of the pack's own types (a PSF, a loaded model): the node that makes that type from
  widgets alone is run first (``RestoreKitPSF`` for ``psf``, ``RestoreKitLoadModel`` for ``model``),
  with ``--set socket.name=value`` for its widgets.  Required ones are always made; optional ones
  when a ``socket.name`` setting asks for them.

Nothing here is imported by ``hybrid/`` at import time; the node package (and torch) is imported
when a processor is built.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...scripts import image_io
from . import workflow as wf
from .batch import Processor, Result

NODE_PREFIX = "RestoreKit"
#: node-id prefix stripped for output names and accepted as optional on the command line


# --- finding nodes and describing them -------------------------------------------------------------
def pack_nodes() -> Dict[str, Any]:
    return dict(wf._pack().NODE_CLASS_MAPPINGS)


def find_node(name: str) -> str:
    """The node id for ``name``: the id, or case-insensitively the id without ``RestoreKit``, or the
    display name.  ``ValueError`` with close matches when none fits."""
    nodes = pack_nodes()
    if name in nodes:
        return name
    names = wf.display_names()
    key = re.sub(r"[\s_\-()/]", "", name).lower()
    for nid in nodes:
        short = nid[len(NODE_PREFIX):] if nid.startswith(NODE_PREFIX) else nid
        disp = re.sub(r"[\s_\-()/]", "", names.get(nid, "")).lower()
        if key in (nid.lower(), short.lower(), disp):
            return nid
    close = difflib.get_close_matches(name, list(nodes) + [n[len(NODE_PREFIX):] for n in nodes], n=4, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown node '{name}'{hint}; `restorekit run --list` lists them all")


def short_name(node_id: str) -> str:
    short = node_id[len(NODE_PREFIX):] if node_id.startswith(NODE_PREFIX) else node_id
    return short.lower() or node_id.lower()


def list_text() -> str:
    """Every node: id, display name, first line of its description."""
    nodes, names = pack_nodes(), wf.display_names()
    lines = []
    for nid in sorted(nodes, key=lambda n: (getattr(nodes[n], "CATEGORY", ""), n)):
        desc = (getattr(nodes[nid], "DESCRIPTION", "") or "").strip().split("\n")[0]
        lines.append(f"{nid:<30} {names.get(nid, nid)}\n    {desc[:110]}")
    return "\n".join(lines)


def help_text(node_id: str) -> str:
    """The node's inputs (type, range or choices, default, tooltip) and outputs, from INPUT_TYPES."""
    cls = pack_nodes()[node_id]
    names = wf.display_names()
    specs = wf.input_specs(cls)
    lines = [f"{node_id} — {names.get(node_id, node_id)}  (category {getattr(cls, 'CATEGORY', '')})"]
    desc = (getattr(cls, "DESCRIPTION", "") or "").strip()
    if desc:
        lines += ["", " ".join(desc.split())]
    lines += ["", f"usage: restorekit run {node_id} INPUT... -o OUT [--set name=value ...]", "", "inputs:"]
    producers = _producers()
    primary, file_widget = _primary(specs)
    for s in specs:
        text = s.describe()
        tip = f"\n      {s.options['tooltip']}" if s.options.get("tooltip") else ""
        if s is primary:
            text = f"{s.name}: IMAGE — each INPUT file{tip}"
        elif s is file_widget:
            text = f"{s.name}: file — each INPUT file{tip}"
        elif not s.is_widget and s.type in ("IMAGE", "MASK"):
            text += f"\n      give it with --input {s.name}=FILE"
        elif not s.is_widget and s.type in producers:
            text += f"\n      made by {producers[s.type]} (set its inputs with --set {s.name}.NAME=VALUE)"
        lines.append("  " + text)
    outs = list(zip(getattr(cls, "RETURN_TYPES", ()), wf.output_names(cls)))
    images = [n for t, n in outs if t == "IMAGE"]
    lines += ["", "outputs:"]
    for t, n in outs:
        if t == "IMAGE":
            where = f"<stem>_{short_name(node_id)}{'' if len(images) == 1 else '_' + n}.<ext>"
        elif t == "STRING":
            where = "printed and in the JSON report"
        else:
            where = "(used inside workflows only)"
        lines.append(f"  {n} ({t}) -> {where}")
    return "\n".join(lines)


def _primary(specs) -> Tuple[Optional[wf.InputSpec], Optional[wf.InputSpec]]:
    """(the IMAGE socket input files go to, or the file widget when there is no IMAGE socket)."""
    images = [s for s in specs if not s.is_widget and s.type == "IMAGE"]
    if images:
        return (next((s for s in images if s.required), images[0]), None)
    return None, next((s for s in specs if s.options.get("image_upload")), None)


def _producers() -> Dict[str, str]:
    """Socket type -> the pack node that makes it from widgets alone (no required sockets)."""
    found: Dict[str, str] = {}
    for nid, cls in sorted(pack_nodes().items()):
        specs = wf.input_specs(cls)
        if any(s.required and not s.is_widget for s in specs) or any(s.options.get("image_upload") for s in specs):
            continue
        for t in getattr(cls, "RETURN_TYPES", ()):
            if t not in ("IMAGE", "MASK", "STRING"):
                found.setdefault(t, nid)
    return found


def split_settings(pairs: Sequence[str]) -> Dict[str, str]:
    """``["a=1", "b.c=x"]`` -> ``{"a": "1", "b.c": "x"}``; ``ValueError`` for a pair without '='."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ValueError(f"--set/--input wants name=value, got {p!r}")
        k, v = p.split("=", 1)
        if not k.strip():
            raise ValueError(f"--set/--input wants name=value, got {p!r}")
        out[k.strip()] = v
    return out


def parse_widgets(cls, settings: Dict[str, str], where: str) -> Dict[str, Any]:
    """Every widget of ``cls`` at its default, then ``settings`` parsed and checked."""
    specs = {s.name: s for s in wf.input_specs(cls)}
    values = {n: s.default for n, s in specs.items() if s.is_widget and not s.options.get("image_upload")}
    for key, text in settings.items():
        spec = specs.get(key)
        if spec is None or not spec.is_widget:
            widgets = ", ".join(n for n, s in specs.items() if s.is_widget) or "none"
            raise ValueError(f"{where} has no setting '{key}' (its settings: {widgets})")
        values[key] = wf.parse_value(spec, text)
    return values


def _tensor(pixels: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]


def _mask_from_file(path: str):
    px = image_io.read_image(path).pixels
    grey = px[..., 0] if px.shape[-1] == 1 else px[..., :3].mean(-1)
    return _tensor(grey)


# --- one node --------------------------------------------------------------------------------------
class NodeProcessor(Processor):
    """One pack node as a batch processor (see the module docstring for how inputs are filled)."""

    done_label = "processed"

    def __init__(self, node_id: str, settings: Optional[Dict[str, str]] = None,
                 files: Optional[Dict[str, str]] = None, values: Optional[Dict[str, Any]] = None,
                 arrays: Optional[Dict[str, Any]] = None):
        """``settings``: widget values as command-line text (``socket.name`` keys for producer
        nodes); ``files``: socket -> image file; ``values``: typed widget values (Python API);
        ``arrays``: socket -> numpy image (IMAGE: dtype rules of :func:`image_io.to_float01`)."""
        self.node_id = node_id
        self.cls = pack_nodes()[node_id]
        settings = dict(settings or {})
        specs = wf.input_specs(self.cls)
        self.primary, self.file_widget = _primary(specs)
        own = {k: v for k, v in settings.items() if "." not in k}
        nested = {k: v for k, v in settings.items() if "." in k}
        self.widgets = parse_widgets(self.cls, own, node_id)
        by_name = {s.name: s for s in specs}
        for key, value in (values or {}).items():
            spec = by_name.get(key)
            if spec is None or not spec.is_widget:
                widgets = ", ".join(n for n, s in by_name.items() if s.is_widget) or "none"
                raise ValueError(f"{node_id} has no setting '{key}' (its settings: {widgets})")
            errs = wf.check_value(spec, value)
            if errs:
                raise ValueError(f"{node_id}: {errs[0]}")
            self.widgets[key] = value
        self.sockets: Dict[str, Any] = {}
        for name, arr in (arrays or {}).items():
            spec = by_name[name]
            px, _kind, _notes = image_io.to_float01(arr, name)
            if spec.type == "MASK":
                self.sockets[name] = _tensor(px if px.ndim == 2 else px[..., :3].mean(-1))
            else:
                self.sockets[name] = _tensor(px if px.ndim == 3 else px[..., None])
        producers = _producers()
        for name, path in (files or {}).items():
            spec = by_name.get(name)
            if spec is None or spec.is_widget or spec.type not in ("IMAGE", "MASK"):
                socks = [s.name for s in specs if not s.is_widget and s.type in ("IMAGE", "MASK")]
                raise ValueError(f"{node_id} has no image socket '{name}' (its image sockets: {', '.join(socks) or 'none'})")
            if spec is self.primary:
                raise ValueError(f"'{name}' takes the INPUT files; give them as positional arguments")
            self.sockets[name] = _mask_from_file(path) if spec.type == "MASK" else _tensor(image_io.read_image(path).pixels)
        for s in specs:
            if s.is_widget or s is self.primary or s.name in self.sockets:
                continue
            mine = {k.split(".", 1)[1]: v for k, v in nested.items() if k.split(".", 1)[0] == s.name}
            if s.type in producers and (s.required or mine):
                pcls = pack_nodes()[producers[s.type]]
                made = wf.call_node(pcls, parse_widgets(pcls, mine, f"{producers[s.type]} (for {s.name})"))
                self.sockets[s.name] = made[list(pcls.RETURN_TYPES).index(s.type)]
            elif s.required:
                how = f"--input {s.name}=FILE" if s.type in ("IMAGE", "MASK") else "a workflow (--workflow)"
                raise ValueError(f"{node_id} needs its '{s.name}' input ({s.type}): give it with {how}")
        unknown = sorted({k.split(".", 1)[0] for k in nested} - {s.name for s in specs if not s.is_widget})
        if unknown:
            raise ValueError(f"{node_id} has no socket {', '.join(unknown)} for the settings given")
        types = list(getattr(self.cls, "RETURN_TYPES", ()))
        names = wf.output_names(self.cls)
        self._image_outputs = [(i, n) for i, (t, n) in enumerate(zip(types, names)) if t == "IMAGE"]
        self.outputs = [""] if len(self._image_outputs) == 1 else [n for _, n in self._image_outputs]
        self._string_outputs = [(i, n) for i, (t, n) in enumerate(zip(types, names)) if t == "STRING"]

    @property
    def needs_files(self) -> bool:
        return self.primary is not None or self.file_widget is not None

    def call(self, image: Optional[image_io.ImageData]) -> tuple:
        """The node's raw output tuple for ``image`` (None for a node that needs no file)."""
        kwargs = dict(self.widgets)
        kwargs.update(self.sockets)
        folders = {}
        if self.primary is not None:
            kwargs[self.primary.name] = _tensor(image.pixels)
        elif self.file_widget is not None:
            if not image.path:
                raise ValueError(f"{self.node_id} reads a file: give a path, not an array")
            folders["input"] = os.path.dirname(os.path.abspath(image.path))
            kwargs[self.file_widget.name] = os.path.basename(image.path)
        for name, kind in wf.hidden_inputs(self.cls).items():
            kwargs[name] = {"UNIQUE_ID": "1", "PROMPT": None, "EXTRA_PNGINFO": None}.get(kind)
        with wf._adapter().image_folders(**folders):
            return wf.call_node(self.cls, kwargs)

    def last_outputs(self, image: Optional[image_io.ImageData]) -> Dict[str, Any]:
        """Every output by name: IMAGE as float32 numpy ``[H,W,C]`` (``[B,H,W,C]`` for B > 1)."""
        out = self.call(image)
        res = {}
        for i, (t, name) in enumerate(zip(self.cls.RETURN_TYPES, wf.output_names(self.cls))):
            if t == "IMAGE":
                arr = out[i].detach().cpu().float().numpy()
                res[name] = arr[0] if arr.shape[0] == 1 else arr
            else:
                res[name] = out[i]
        return res

    def __call__(self, image: Optional[image_io.ImageData]) -> Result:
        out = self.call(image)
        images = {}
        for slot, (i, name) in enumerate(self._image_outputs):
            arr = out[i].detach().cpu().float().numpy()
            images[self.outputs[slot]] = arr[0] if arr.shape[0] == 1 else arr
        texts = {name: str(out[i]) for i, name in self._string_outputs}
        ui = getattr(out, "ui", None)
        fields: Dict[str, Any] = {"node": self.node_id}
        if texts:
            fields["text"] = texts
        files = wf.files_from_ui([ui], wf._adapter().image_folder("output"))
        if files:
            fields["node_outputs"] = files
        first = next(iter(texts.values()), "").strip().split("\n")
        summary = "; ".join(l for l in first[1:4] if l) if len(first) > 1 else (first[0] if first else "")
        changed = None if self.primary is not None else True
        return Result(images, fields, summary, changed=changed)


# --- a workflow ------------------------------------------------------------------------------------
def _sanitise(prefix: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(prefix)).strip("._") or "output"
    return s


class WorkflowProcessor(Processor):
    """An API prompt as a batch processor: the input file goes to its one LoadImage (core or ours),
    every core SaveImage becomes an output ``<stem>_<filename_prefix>.<ext>``."""

    done_label = "processed"

    def __init__(self, prompt: Dict[str, dict], settings: Optional[Dict[str, str]] = None):
        self.classes = wf.node_classes()
        self.prompt = copy.deepcopy(prompt)
        for key, text in (settings or {}).items():
            nid, _, name = key.partition(".")
            node = self.prompt.get(nid)
            if node is None or not name:
                raise ValueError(f"--set for a workflow wants NODE_ID.input=value (node ids: "
                                 f"{', '.join(sorted(self.prompt, key=str))}), got {key!r}")
            cls = self.classes.get(node.get("class_type"))
            spec = next((s for s in wf.input_specs(cls) if s.name == name), None) if cls else None
            if spec is None or not spec.is_widget:
                raise ValueError(f"node {nid} ({node.get('class_type')}) has no setting '{name}'")
            node["inputs"][name] = wf.parse_value(spec, text)
        self.load_nodes = [nid for nid, n in self.prompt.items() if self._is_loader(n)]
        saves = [nid for nid, n in sorted(self.prompt.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
                 if n.get("class_type") == "SaveImage"]
        names: Dict[str, str] = {}
        for nid in saves:
            prefix = str(self.prompt[nid]["inputs"].get("filename_prefix", "ComfyUI"))
            name = _sanitise(prefix.replace("\\", "/").rstrip("/").split("/")[-1])
            names[nid] = name if name not in names.values() else f"{name}_{nid}"
        self.save_names = names
        self.outputs = list(names.values()) or [""]

    def _is_loader(self, node) -> bool:
        ct = node.get("class_type")
        cls = self.classes.get(ct)
        return ct == "LoadImage" or (cls is not None and any(s.options.get("image_upload") for s in wf.input_specs(cls)))

    def own_images(self) -> List[str]:
        """The file names the workflow's loaders name."""
        return [str(self.prompt[n]["inputs"].get("image")) for n in self.load_nodes]

    def __call__(self, image: Optional[image_io.ImageData]) -> Result:
        adapter = wf._adapter()
        folders = {}
        if image is not None and image.path:
            folders["input"] = os.path.dirname(os.path.abspath(image.path))
        with adapter.image_folders(**folders):
            return self._run(image, adapter)

    def _run(self, image, adapter) -> Result:
        prompt = copy.deepcopy(self.prompt)
        fed = None
        if image is not None:
            if len(self.load_nodes) != 1:
                raise ValueError(f"an input image can feed only a workflow with exactly one image loader "
                                 f"(this one has {len(self.load_nodes)})")
            fed = os.path.basename(image.path) if image.path else "(array)"
            prompt[self.load_nodes[0]]["inputs"]["image"] = fed
        collected: Dict[str, Any] = {}

        def load_image(name):
            if fed is not None and name == fed:
                px = image.pixels
            else:
                px = image_io.read_image(adapter.image_path(name)).pixels
            rgb = px[..., :3] if px.shape[-1] >= 3 else np.repeat(px, 3, -1)
            mask = 1.0 - px[..., 3] if px.shape[-1] == 4 else np.zeros((64, 64), np.float32)
            return _tensor(rgb), _tensor(mask)

        def save_image(nid, images, prefix):
            collected[self.save_names[nid]] = images.detach().cpu().float().numpy()
            return []

        errors = wf.validate_prompt(prompt, self.classes)
        if fed is not None:  # the fed loader's file need not be in a folder listing
            tag = f"node {self.load_nodes[0]} ("
            errors = [e for e in errors if not (tag in e and "input 'image'" in e)]
        errors = [e for e in errors if "feed no output node" not in e]
        if errors:
            raise ValueError("invalid workflow:\n  " + "\n  ".join(errors))
        res = wf.execute_prompt(prompt, self.classes, load_image=load_image, save_image=save_image,
                                validate=False)
        images = {k: (v[0] if v.shape[0] == 1 else v) for k, v in collected.items()}
        fields = {"texts": res.texts} if res.texts else {}
        files = res.node_files(adapter.image_folder("output"))
        if files:
            fields["node_outputs"] = files
        return Result(images, fields, f"{len(res.order)} nodes ran", changed=True)
