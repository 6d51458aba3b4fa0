"""Node schemas and API prompts without a ComfyUI server: read, validate and execute in-process.

Used by ``restorekit run`` (one node, or ``--workflow X.json``), the Python API (:func:`run_workflow`)
and the tests.  An API prompt is ``{node_id: {"class_type": ..., "inputs": {...}}}`` (what ComfyUI's
"Export (API)" writes); a file may also be the ``POST /prompt`` body ``{"prompt": {...}, ...}`` (as
``examples/api/*.json`` are) or a UI workflow (``nodes``/``links``, converted by :func:`ui_to_prompt`).

Node classes are the pack's ``NODE_CLASS_MAPPINGS`` plus minimal descriptions of the ComfyUI core
nodes the examples use (:data:`CORE_SCHEMAS`): ``LoadImage``, ``SaveImage``, ``PreviewImage``,
``PreviewAny`` and ``MaskToImage``.  The first four are done by callbacks the caller passes to
:func:`execute_prompt` (the CLI reads and writes files with :mod:`scripts.image_io`); ``MaskToImage``
is computed here as core computes it.

The pack's nodes are imported only when :func:`node_classes` is first called, so importing this
module (and ``hybrid/``) does not import ``nodes/`` or torch.
"""
from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

#: ComfyUI value types that are widgets (anything else is a socket fed by a link)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: keys ComfyUI's POST /prompt reads from the body
BODY_KEYS = {"prompt", "extra_data", "client_id", "number", "front", "prompt_id", "partial_execution_targets"}
#: frontend-only node types (notes) that have no API twin
UI_ONLY_TYPES = {"MarkdownNote", "Note"}


def _pack():
    """The root package this module belongs to (whatever name it was imported under)."""
    return importlib.import_module("...", __package__)


def input_directory() -> str:
    """Where LoadImage-style nodes look for files (ComfyUI's input folder inside ComfyUI)."""
    return _adapter().image_folder("input")


def _adapter():
    """nodes/comfy_adapter's runtime (imports the node package: call only when running nodes)."""
    adapter = importlib.import_module(_pack().__name__ + ".nodes.comfy_adapter")
    return adapter.install()


# --- core node descriptions --------------------------------------------------------------------------
class CoreLoadImage:
    """ComfyUI core 'Load Image': a file from the input folder -> IMAGE [1,H,W,3] and MASK (1 - alpha)."""
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    OUTPUT_NODE = False

    @classmethod
    def INPUT_TYPES(cls):
        folder = input_directory()
        files = sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))) \
            if os.path.isdir(folder) else []
        return {"required": {"image": (files, {"image_upload": True})}}


class CoreSaveImage:
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}


class CorePreviewImage(CoreSaveImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}


class CorePreviewAny:
    """ComfyUI core 'Preview Any': shows any value as text."""
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("*", {})}}


class CoreMaskToImage:
    """ComfyUI core 'Convert Mask to Image': MASK ``[B,H,W]`` -> IMAGE ``[B,H,W,3]`` (the mask in all
    three channels, white = masked)."""
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "mask_to_image"
    OUTPUT_NODE = False

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1)
        return (m.expand(-1, -1, -1, 3),)


CORE_SCHEMAS = {"LoadImage": CoreLoadImage, "SaveImage": CoreSaveImage, "PreviewImage": CorePreviewImage,
                "PreviewAny": CorePreviewAny, "MaskToImage": CoreMaskToImage}
CORE_DISPLAY_NAMES = {"LoadImage": "Load Image", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
                      "PreviewAny": "Preview Any", "MaskToImage": "Convert Mask to Image"}


def node_classes() -> Dict[str, Any]:
    """Every class a prompt may name: :data:`CORE_SCHEMAS` plus the pack's nodes."""
    classes = dict(CORE_SCHEMAS)
    classes.update(_pack().NODE_CLASS_MAPPINGS)
    return classes


def display_names() -> Dict[str, str]:
    names = dict(CORE_DISPLAY_NAMES)
    names.update(_pack().NODE_DISPLAY_NAME_MAPPINGS)
    return names


# --- schemas -----------------------------------------------------------------------------------------
@dataclass
class InputSpec:
    """One input of a node: name, type (INT, FLOAT, STRING, BOOLEAN, COMBO or a socket type such as
    IMAGE), its options dict (default, min, max, step, tooltip, ...), required or optional, choices."""

    name: str
    type: str
    options: dict
    required: bool
    choices: Optional[list] = None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def default(self):
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            return (self.choices or [None])[0]
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.type)

    @property
    def control_after_generate(self) -> bool:
        """The frontend adds a 'control_after_generate' widget after this one (saved in widgets_values)."""
        if self.type == "INT":
            return bool(self.options.get("control_after_generate", self.name in ("seed", "noise_seed")))
        if self.type == "COMBO":
            return bool(self.options.get("control_after_generate", False))
        return False

    def describe(self) -> str:
        """One help line: type, default, range or choices, tooltip."""
        o = self.options
        if self.type == "COMBO":
            shown = self.choices or []
            kind = "one of: " + (", ".join(map(str, shown[:12])) + (" ..." if len(shown) > 12 else "")
                                 if shown else "(no choices available here)")
        elif self.type in ("INT", "FLOAT"):
            rng = f"{o.get('min', '-inf')}..{o.get('max', 'inf')}"
            kind = f"{self.type.lower()} {rng}" + (f", step {o['step']}" if "step" in o else "")
        elif self.type == "BOOLEAN":
            kind = "true/false"
        elif self.type == "STRING":
            kind = "text"
        else:
            kind = f"{self.type} socket"
        default = "" if not self.is_widget else f" [default: {self.default}]"
        need = "" if self.required else " (optional)"
        tip = o.get("tooltip", "")
        return f"{self.name}: {kind}{default}{need}" + (f"\n      {tip}" if tip else "")


def input_specs(cls) -> List[InputSpec]:
    """The inputs of node class ``cls`` in INPUT_TYPES order (required, then optional)."""
    declared = cls.INPUT_TYPES()
    specs = []
    for section in ("required", "optional"):
        for name, decl in (declared.get(section) or {}).items():
            kind = decl[0]
            opts = dict(decl[1]) if len(decl) > 1 and isinstance(decl[1], dict) else {}
            if isinstance(kind, (list, tuple)):
                specs.append(InputSpec(name, "COMBO", opts, section == "required", list(kind)))
            elif kind == "COMBO":
                specs.append(InputSpec(name, "COMBO", opts, section == "required", list(opts.get("options", []))))
            else:
                specs.append(InputSpec(name, str(kind), opts, section == "required"))
    return specs


def hidden_inputs(cls) -> Dict[str, str]:
    return dict(cls.INPUT_TYPES().get("hidden") or {})


def output_names(cls) -> List[str]:
    types = list(getattr(cls, "RETURN_TYPES", ()))
    names = list(getattr(cls, "RETURN_NAMES", None) or types)
    return [n if n else t for n, t in zip(names, types)]


def is_link(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's rule (comfy_execution/validation.py): equal, '*' on either side, or overlapping unions."""
    if received == expected or "*" in (received, expected):
        return True
    a = {t.strip() for t in str(received).split(",")}
    b = {t.strip() for t in str(expected).split(",")}
    return bool(a & b)


def check_value(spec: InputSpec, value, tag: str = "") -> List[str]:
    """Problems with a widget ``value`` for ``spec`` (type, min/max, choice list), as ComfyUI checks."""
    name, opts = spec.name, spec.options
    tag = f"{tag}: " if tag else ""
    if spec.type == "COMBO":
        if value not in (spec.choices or []):
            shown = ", ".join(map(str, (spec.choices or [])[:12]))
            return [f"{tag}input '{name}' value {value!r} not in the choice list [{shown}]"]
        return []
    if spec.type == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{tag}input '{name}' must be true/false, got {value!r}"]
    if spec.type == "STRING":
        return [] if isinstance(value, str) else [f"{tag}input '{name}' must be a string, got {value!r}"]
    if spec.type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{tag}input '{name}' must be an integer, got {value!r}"]
    if spec.type == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(float(value))):
        return [f"{tag}input '{name}' must be a finite number, got {value!r}"]
    errs = []
    if spec.type in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            errs.append(f"{tag}input '{name}' = {value} is below min {opts['min']}")
        if "max" in opts and value > opts["max"]:
            errs.append(f"{tag}input '{name}' = {value} is above max {opts['max']}")
    return errs


def parse_value(spec: InputSpec, text: str):
    """A command-line string as the value ``spec`` wants (int, float, bool, str or a choice); raises
    ``ValueError`` with the rule when it does not fit (range and choices included)."""
    t = text.strip()
    if spec.type == "INT":
        try:
            value = int(t)
        except ValueError:
            raise ValueError(f"'{spec.name}' wants an integer, got {text!r}") from None
    elif spec.type == "FLOAT":
        try:
            value = float(t)
        except ValueError:
            raise ValueError(f"'{spec.name}' wants a number, got {text!r}") from None
    elif spec.type == "BOOLEAN":
        low = t.lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"'{spec.name}' wants true or false, got {text!r}")
        value = low in ("true", "1", "yes", "on")
    elif spec.type == "COMBO":
        choices = spec.choices or []
        value = next((c for c in choices if str(c) == t), None)
        if value is None:
            value = next((c for c in choices if str(c).lower() == t.lower()), t)
    else:
        value = text
    errs = check_value(spec, value)
    if errs:
        raise ValueError(errs[0])
    return value


# --- reading prompts ---------------------------------------------------------------------------------
def read_prompt(path: str, classes: Optional[Dict[str, Any]] = None) -> Dict[str, dict]:
    """The API prompt in ``path``: a bare prompt, a ``POST /prompt`` body or a UI workflow."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return prompt_from_json(data, classes, where=os.path.basename(path))


def prompt_from_json(data, classes: Optional[Dict[str, Any]] = None, where: str = "workflow") -> Dict[str, dict]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if isinstance(data.get("prompt"), dict):
        return data["prompt"]
    if isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list):
        return ui_to_prompt(data, classes)
    return {k: v for k, v in data.items() if isinstance(v, dict) and "class_type" in v}


def ui_to_prompt(workflow: dict, classes: Optional[Dict[str, Any]] = None) -> Dict[str, dict]:
    """A UI workflow (what ComfyUI's Save writes) as an API prompt: widget values by INPUT_TYPES order
    (skipping the frontend's control_after_generate and upload values), links as ``[src_id, slot]``.
    Notes and bypassed/muted nodes (mode 2/4) are left out."""
    classes = classes if classes is not None else node_classes()
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_TYPES or node.get("mode", 0) in (2, 4):
            continue
        cls = classes.get(node["type"])
        if cls is None:
            raise ValueError(f"UI workflow node {node['id']}: unknown node type '{node['type']}'")
        inputs = ui_widget_map(node["type"], cls, node.get("widgets_values") or [])
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                l = links[entry["link"]]
                inputs[entry["name"]] = [str(l[1]), int(l[2])]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def ui_widget_map(class_type: str, cls, widgets_values: List[Any]) -> Dict[str, Any]:
    """Input name -> value from a UI node's ``widgets_values`` (extra control/upload values skipped)."""
    out, i = {}, 0
    if isinstance(widgets_values, dict):  # some frontends save a name -> value mapping
        return dict(widgets_values)
    for spec in input_specs(cls):
        if not spec.is_widget:
            continue
        if i >= len(widgets_values):
            raise ValueError(f"{class_type}: widgets_values has {len(widgets_values)} entries, too few")
        out[spec.name] = widgets_values[i]
        i += 1 + int(spec.control_after_generate) + int(bool(spec.options.get("image_upload")))
    if i != len(widgets_values):
        raise ValueError(f"{class_type}: widgets_values has {len(widgets_values)} entries, expected {i}")
    return out


# --- validation --------------------------------------------------------------------------------------
def validate_prompt(prompt: Dict[str, dict], classes: Optional[Dict[str, Any]] = None,
                    where: str = "prompt", require_save: bool = False) -> List[str]:
    """Check an API prompt the way ComfyUI's ``execution.validate_prompt`` does, a little stricter.

    Returns a list of problems (empty = valid): unknown class, unknown or missing inputs, wrong value
    types, values outside min/max or not in a choice list, links to missing nodes or output indices,
    link type mismatches, cycles, a prompt without an output node, and nodes that feed no output node
    (ComfyUI would silently not run them).  ``require_save``: also ask for a SaveImage node.
    """
    classes = classes if classes is not None else node_classes()
    errors: List[str] = []
    if not isinstance(prompt, dict) or not prompt:
        return [f"{where}: empty or not an object"]
    for nid, node in prompt.items():
        tag = f"{where} node {nid}"
        if not isinstance(node, dict) or "class_type" not in node or "inputs" not in node:
            errors.append(f"{tag}: needs 'class_type' and 'inputs'")
            continue
        if not str(nid).isdigit():
            errors.append(f"{tag}: node ids must be integers written as strings (the UI needs numbers)")
        ct = node["class_type"]
        tag = f"{where} node {nid} ({ct})"
        cls = classes.get(ct)
        if cls is None:
            errors.append(f"{tag}: unknown class_type '{ct}'")
            continue
        specs = {s.name: s for s in input_specs(cls)}
        hidden = hidden_inputs(cls)
        inputs = node["inputs"]
        for name in inputs:
            if name not in specs and name not in hidden:
                errors.append(f"{tag}: unknown input '{name}' (known: {', '.join(specs)})")
        for name, spec in specs.items():
            if name not in inputs:
                if spec.required:
                    errors.append(f"{tag}: required input '{name}' missing")
                continue
            value = inputs[name]
            if is_link(value):
                errors.extend(_check_link(prompt, classes, tag, name, spec, value))
            elif not spec.is_widget:
                errors.append(f"{tag}: input '{name}' ({spec.type}) must be a link [node_id, output_index], got {value!r}")
            else:
                errors.extend(check_value(spec, value, tag))
    errors.extend(_check_graph(prompt, classes, where, require_save))
    return errors


def _check_link(prompt, classes, tag, name, spec, value) -> List[str]:
    src_id, slot = value
    src = prompt.get(src_id)
    if not isinstance(src, dict) or src.get("class_type") not in classes:
        return [f"{tag}: input '{name}' links to missing or unknown node '{src_id}'"]
    rtypes = list(getattr(classes[src["class_type"]], "RETURN_TYPES", ()))
    if not 0 <= slot < len(rtypes):
        return [f"{tag}: input '{name}' links to output {slot} of node {src_id}, which has {len(rtypes)} output(s)"]
    if not types_match(rtypes[slot], spec.type):
        return [f"{tag}: input '{name}' wants {spec.type}, node {src_id} output {slot} is {rtypes[slot]}"]
    return []


def _check_graph(prompt, classes, where, require_save) -> List[str]:
    errors = []
    try:
        topo_order(prompt)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
    outputs = output_nodes(prompt, classes)
    if not outputs:
        errors.append(f"{where}: no output node (ComfyUI refuses it: prompt_no_outputs); add a SaveImage")
    if require_save and not any(isinstance(n, dict) and n.get("class_type") == "SaveImage" for n in prompt.values()):
        errors.append(f"{where}: no SaveImage node (every example ends in a saved image)")
    dead = sorted(set(prompt) - needed_nodes(prompt, outputs), key=str)
    if outputs and dead:
        errors.append(f"{where}: node(s) {dead} feed no output node, so ComfyUI would not run them "
                      f"(connect them, e.g. an info STRING to a PreviewAny)")
    return errors


def output_nodes(prompt, classes) -> List[str]:
    return [nid for nid, n in prompt.items() if isinstance(n, dict)
            and getattr(classes.get(n.get("class_type")), "OUTPUT_NODE", False)]


def needed_nodes(prompt, outputs) -> set:
    """The output nodes and everything they depend on (what ComfyUI executes)."""
    needed, todo = set(), list(outputs)
    while todo:
        nid = todo.pop()
        if nid in needed or not isinstance(prompt.get(nid), dict):
            continue
        needed.add(nid)
        todo.extend(v[0] for v in prompt[nid].get("inputs", {}).values() if is_link(v))
    return needed


def topo_order(prompt: Dict[str, dict]) -> List[str]:
    """Node ids in an order where every node comes after the nodes it links to (ties by id)."""
    deps = {nid: {v[0] for v in node.get("inputs", {}).values() if is_link(v) and v[0] in prompt}
            for nid, node in prompt.items()}
    key = lambda n: (int(n) if str(n).isdigit() else 10**9, str(n))  # noqa: E731
    order, done = [], set()
    ready = sorted([n for n, d in deps.items() if not d], key=key)
    while ready:
        n = ready.pop(0)
        order.append(n)
        done.add(n)
        ready.extend(m for m, d in deps.items() if m not in done and m not in ready and n in d and d <= done)
        ready.sort(key=key)
    if len(order) != len(prompt):
        raise ValueError(f"cycle among nodes {sorted(set(prompt) - done, key=key)}")
    return order


# --- execution ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    outputs: Dict[str, tuple] = field(default_factory=dict)    # node id -> output tuple
    saved: Dict[str, List[str]] = field(default_factory=dict)  # SaveImage node id -> written paths
    images: Dict[str, Any] = field(default_factory=dict)       # SaveImage/PreviewImage node id -> tensor
    texts: Dict[str, str] = field(default_factory=dict)        # PreviewAny / node ui text, by node id
    ui: Dict[str, dict] = field(default_factory=dict)          # a node's "ui" dict, by node id
    order: List[str] = field(default_factory=list)

    def node_files(self, output_dir: str) -> List[str]:
        """Files nodes of the pack wrote into ``output_dir`` (their ``ui.images`` of type output)."""
        return files_from_ui(self.ui.values(), output_dir)


def files_from_ui(uis, output_dir: str) -> List[str]:
    paths = []
    for ui in uis:
        for im in (ui or {}).get("images", []) if isinstance(ui, dict) else []:
            if isinstance(im, dict) and im.get("type") == "output" and im.get("filename"):
                paths.append(os.path.join(output_dir, im.get("subfolder") or "", im["filename"]))
    return paths


def call_node(cls, kwargs: Dict[str, Any]) -> tuple:
    """Instantiate ``cls``, call its FUNCTION under ``torch.inference_mode`` and return the result
    tuple (a ``{"ui": ..., "result": ...}`` return gives its ``result``), checked against RETURN_TYPES."""
    import torch

    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
    ui = None
    if isinstance(out, dict):
        ui = out.get("ui")
        out = out.get("result", ())
    out = tuple(out)
    n = len(getattr(cls, "RETURN_TYPES", ()))
    if len(out) != n:
        raise RuntimeError(f"{cls.__name__} returned {len(out)} values for {n} RETURN_TYPES")
    return out if ui is None else _WithUI(out, ui)


class _WithUI(tuple):
    """A node's result tuple that also carries its ``ui`` dict."""

    def __new__(cls, values, ui):
        obj = super().__new__(cls, values)
        obj.ui = ui
        return obj


def execute_prompt(prompt: Dict[str, dict], classes: Optional[Dict[str, Any]] = None, *,
                   load_image: Callable[[str], tuple], save_image: Callable[[str, Any, str], List[str]],
                   validate: bool = True, only_needed: bool = True) -> RunResult:
    """Run an API prompt in-process, nodes in topological order.

    ``load_image(name) -> (IMAGE, MASK)`` does core LoadImage; ``save_image(node_id, images, prefix)
    -> paths`` does core SaveImage (PreviewImage images are kept in ``RunResult.images`` only).
    Every other node is instantiated from its class and its ``FUNCTION`` called with the resolved
    inputs (defaults filled for absent optional widgets, as ComfyUI does not, so nodes see their own
    Python defaults).  ``validate``: refuse an invalid prompt first (``ValueError`` listing every
    problem).  ``only_needed``: run only what output nodes depend on, as ComfyUI does.
    """
    classes = classes if classes is not None else node_classes()
    if validate:
        errors = validate_prompt(prompt, classes)
        errors = [e for e in errors if "feed no output node" not in e]
        if errors:
            raise ValueError("invalid workflow:\n  " + "\n  ".join(errors))
    res = RunResult(order=topo_order(prompt))
    keep = needed_nodes(prompt, output_nodes(prompt, classes)) if only_needed else set(prompt)
    res.order = [n for n in res.order if n in keep]
    for nid in res.order:
        node = prompt[nid]
        ct = node["class_type"]
        cls = classes[ct]
        kwargs = {}
        for name, value in node["inputs"].items():
            kwargs[name] = res.outputs[value[0]][value[1]] if is_link(value) else value
        for name, kind in hidden_inputs(cls).items():
            kwargs[name] = {"UNIQUE_ID": nid, "PROMPT": prompt, "EXTRA_PNGINFO": {}}.get(kind)
        try:
            if ct == "LoadImage":
                out = tuple(load_image(kwargs["image"]))
            elif ct == "PreviewAny":
                res.texts[nid] = str(kwargs.get("source"))
                out = ()
            elif ct in ("SaveImage", "PreviewImage"):
                images = kwargs["images"]
                if not hasattr(images, "ndim") or images.ndim != 4:
                    raise ValueError(f"got {type(images).__name__} {getattr(images, 'shape', '')}, not an IMAGE")
                res.images[nid] = images
                if ct == "SaveImage":
                    res.saved[nid] = list(save_image(nid, images, kwargs.get("filename_prefix", "ComfyUI")))
                out = ()
            else:
                out = call_node(cls, kwargs)
                ui = getattr(out, "ui", None)
                if isinstance(ui, dict):
                    res.ui[nid] = ui
                    if ui.get("text"):
                        res.texts[nid] = "\n".join(map(str, ui["text"]))
        except ValueError as exc:
            raise ValueError(f"node {nid} ({ct}): {exc}") from exc
        res.outputs[nid] = tuple(out)
    return res
