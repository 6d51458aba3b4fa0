"""Example workflows: load, validate, run in-process, and convert API prompts to UI workflows.

File format of ``examples/api/<name>.json`` (decided for issue 7): each file IS the body of
ComfyUI's ``POST /prompt``, so ``curl -H 'Content-Type: application/json' -d @file
http://127.0.0.1:8188/prompt`` works as shipped::

    {
      "prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": "old_photo.png"}}, ...},
      "_meta": {
        "title": "Old photo chain",
        "description": "what it shows; which real model file to put where",
        "models": [{"folder": "upscale_models", "name": "RealESRGAN_x4plus.pth", "arch": "esrgan",
                    "source": "where the real file comes from"}]
      }
    }

ComfyUI's server reads only ``prompt`` (and ``extra_data``, ``client_id``, ``number``, ``front``,
``prompt_id``, ``partial_execution_targets``) from the body and ignores other keys, so ``_meta`` rides
along.  Node ids are strings of integers ("1", "2", ...).  A plain prompt (the file holding only the
node dict) is read too (:func:`read_example` reports ``plain=True``) but the test asks for the body
form, because only that one posts with ``curl -d @file``.

``_meta.models`` lists the model files an example needs; the tests write a small random-weight file of
``arch`` (a key of :data:`MODEL_MAKERS`) under ``name`` in a temporary ``<models>/<folder>``, and the
description says which real file to use.  An entry with ``"shipped": "models/<path>"`` names real weights
that ship inside the pack (its ``models/`` folder, registered as a model folder by the pack itself): nothing
is written, the file must exist, and the example runs the real network.

Schemas, validation and the in-process executor are the library's (``hybrid/tools/workflow.py``, also
behind ``restorekit run --workflow``); this module adds what only the tests need: the examples' file
format, model files for the model examples, the UI-workflow generator, and ComfyUI core's own
``LoadImage`` / ``SaveImage`` semantics (RGB float32 ``[1,H,W,3]`` from 8-bit data plus a ``[1,H,W]``
mask that is ``1 - alpha``, or a 64x64 zero mask without alpha; PNG written from ``clip(255*x)`` as
uint8), so the examples are checked the way ComfyUI runs them.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from _repo import REPO, load_pack  # the one loader of the pack (tests/_repo.py)

EXAMPLES_DIR = os.path.join(REPO, "examples")
API_DIR = os.path.join(EXAMPLES_DIR, "api")
IMAGES_DIR = os.path.join(EXAMPLES_DIR, "images")

#: keys ComfyUI's POST /prompt understands in the body; "_meta"/"description" are ours (ignored there)
BODY_KEYS = {"prompt", "extra_data", "client_id", "number", "front", "prompt_id", "partial_execution_targets"}
META_KEYS = {"_meta", "description"}

# --- the pack -----------------------------------------------------------------------------------
load_pack()
from restorekit.hybrid.tools import workflow as LW  # noqa: E402  (the library's schema helpers and executor)

# the examples' inputs live in examples/images: file nodes of the pack (Load Image (16-bit/float)) list it
LW._adapter().set_image_folder("input", IMAGES_DIR)

InputSpec, input_specs, hidden_inputs, output_names = LW.InputSpec, LW.input_specs, LW.hidden_inputs, LW.output_names
is_link, types_match, topo_order = LW.is_link, LW.types_match, LW.topo_order
WIDGET_TYPES, UI_ONLY_TYPES = LW.WIDGET_TYPES, LW.UI_ONLY_TYPES


def image_files(images_dir: str = IMAGES_DIR) -> List[str]:
    if not os.path.isdir(images_dir):
        return []
    exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    return sorted(f for f in os.listdir(images_dir) if f.lower().endswith(exts))


class _LoadImage(LW.CoreLoadImage):
    """Core LoadImage listing the files of :data:`IMAGES_DIR` (where the examples' inputs live)."""
    images_dir = IMAGES_DIR

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (image_files(cls.images_dir), {"image_upload": True})}}


_SaveImage, _PreviewImage, _PreviewAny = LW.CoreSaveImage, LW.CorePreviewImage, LW.CorePreviewAny


#: ComfyUI core nodes the examples may use, described minimally
CORE_SCHEMAS = {"LoadImage": _LoadImage, "SaveImage": _SaveImage, "PreviewImage": _PreviewImage,
                "PreviewAny": _PreviewAny, "MaskToImage": LW.CoreMaskToImage}


def node_classes() -> Dict[str, Any]:
    """Every class an example may name: the pack's nodes plus :data:`CORE_SCHEMAS`."""
    pack = load_pack()
    classes = dict(CORE_SCHEMAS)
    classes.update(pack.NODE_CLASS_MAPPINGS)
    return classes


def display_name(class_type: str) -> str:
    pack = load_pack()
    names = dict(LW.CORE_DISPLAY_NAMES)
    names.update(pack.NODE_DISPLAY_NAME_MAPPINGS)
    return names.get(class_type, class_type)


# --- reading examples ---------------------------------------------------------------------------
@dataclass
class Example:
    name: str
    path: str
    prompt: Dict[str, dict]
    meta: dict
    body: dict
    plain: bool = False          # file held the bare prompt, not the POST body

    @property
    def models(self) -> List[dict]:
        """``_meta.models`` when declared, else what :func:`infer_models` reads off the prompt."""
        declared = list(self.meta.get("models") or [])
        return declared if declared else infer_models(self.prompt)

    @property
    def notes(self) -> str:
        """Description plus every node's ``_meta.title`` (where examples say which real file to use)."""
        titles = [str((n.get("_meta") or {}).get("title", "")) for n in self.prompt.values() if isinstance(n, dict)]
        return "\n".join([self.description] + titles)

    @property
    def description(self) -> str:
        return str(self.meta.get("description") or self.body.get("description") or "")

    @property
    def title(self) -> str:
        return str(self.meta.get("title") or self.name.replace("_", " ").capitalize())


def read_example(path: str) -> Example:
    with open(path, encoding="utf-8") as f:
        body = json.load(f)
    name = os.path.splitext(os.path.basename(path))[0]
    if not isinstance(body, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(body).__name__}")
    if isinstance(body.get("prompt"), dict):
        meta = body.get("_meta") if isinstance(body.get("_meta"), dict) else {}
        if "description" in body and "description" not in meta:
            meta = dict(meta, description=body["description"])
        return Example(name, path, body["prompt"], meta, body, plain=False)
    meta = body.get("_meta") if isinstance(body.get("_meta"), dict) and "class_type" not in body["_meta"] else {}
    prompt = {k: v for k, v in body.items() if k not in META_KEYS}
    return Example(name, path, prompt, meta, {"prompt": prompt}, plain=True)


def api_paths(api_dir: str = API_DIR) -> List[str]:
    return sorted(glob.glob(os.path.join(api_dir, "*.json")))


def load_examples(api_dir: str = API_DIR) -> List[Example]:
    return [read_example(p) for p in api_paths(api_dir)]


# --- validation ---------------------------------------------------------------------------------
def validate_body(example: Example) -> List[str]:
    """Problems that would stop ``curl -d @file .../prompt`` from working as shipped."""
    errors = []
    if example.plain:
        errors.append(f"{example.name}: the file is a bare prompt; wrap it as {{\"prompt\": {{...}}, \"_meta\": {{...}}}} "
                      f"so it is the POST /prompt body")
        if any(k in example.body.get("prompt", {}) for k in META_KEYS):
            errors.append(f"{example.name}: '_meta'/'description' inside the prompt would be read as a node")
    unknown = set(example.body) - BODY_KEYS - META_KEYS
    if unknown:
        errors.append(f"{example.name}: unknown top-level keys {sorted(unknown)} (ComfyUI ignores them: typo?)")
    for spec in example.models:
        if spec["name"] not in example.notes:
            errors.append(f"{example.name}: neither _meta.description nor a node title names the real model "
                          f"file '{spec['name']}' (say which file, where it comes from, which folder)")
    return errors + check_model_refs(example)


MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors", ".ckpt", ".bin", ".h5", ".keras", ".onnx")


def check_model_refs(example: Example) -> List[str]:
    """Every model-file value the prompt names must be declared in ``_meta.models`` (so tests can
    write it and the description can say where the real one comes from)."""
    declared = {m.get("name") for m in example.models}  # declared, or inferred from model nodes
    errors = []
    for nid, node in example.prompt.items():
        for name, value in (node.get("inputs") or {}).items() if isinstance(node, dict) else ():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS) and value not in declared:
                errors.append(f"{example.name} node {nid}: input '{name}' names model file '{value}', which "
                              f"_meta.models does not declare (folder, name, arch, source)")
    return errors


def validate_prompt(prompt: Dict[str, dict], classes: Optional[Dict[str, Any]] = None,
                    where: str = "prompt") -> List[str]:
    """The library's ComfyUI-style check (hybrid/tools/workflow.py) plus the examples' rule that every
    prompt ends in a SaveImage."""
    return LW.validate_prompt(prompt, classes if classes is not None else node_classes(), where, require_save=True)



# --- model files --------------------------------------------------------------------------------
def _save(obj, path):
    import torch

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    else:
        torch.save(obj, path)
    return path


def _seeded(seed=0):
    import torch

    torch.manual_seed(seed)


def _mid_grey_output(sd):
    """Scale a random network's weights down and set its last bias to 0.5, so its output varies
    around mid-grey instead of clamping to a flat black or white image."""
    sd = {k: (v * 0.5 if v.ndim == 4 else v) for k, v in sd.items()}
    last_bias = [k for k in sd if k.endswith("bias")][-1]
    sd[last_bias] = sd[last_bias].clone().fill_(0.5)
    return sd


def make_esrgan(path, scale=4):
    """Tiny RRDBNet (ESRGAN / Real-ESRGAN x4plus layout: {'params_ema': ...})."""
    import importlib as il

    _seeded()
    rrdb = il.import_module("spandrel.architectures.ESRGAN.__arch.RRDB").RRDBNet
    net = rrdb(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=scale)
    sd = _mid_grey_output(net.state_dict())
    return _save(sd if path.endswith(".safetensors") else {"params_ema": sd}, path)


def make_compact(path, scale=4):
    """Tiny SRVGGNetCompact (realesr-general-x4v3 layout: {'params': ...})."""
    import importlib as il

    _seeded()
    mod = il.import_module("spandrel.architectures.Compact.__arch.SRVGG")
    net = mod.SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=scale)
    sd = net.state_dict()
    return _save(sd if path.endswith(".safetensors") else {"params": sd}, path)


def make_scunet(path):
    """Small SCUNet (dim 64 as its 32-channel attention heads need, one block per stage), saved as a plain state dict like the official files."""
    import importlib as il

    _seeded()
    mod = il.import_module("spandrel.architectures.SCUNet.__arch.SCUNet")
    net = mod.SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64)
    return _save(net.state_dict(), path)


def make_sfhformer(path, family="haze"):
    """Tiny SFHformer in the official layout ({'state_dict': {'module.*': ...}})."""
    _seeded()
    pack = load_pack()
    sfh = importlib.import_module(pack.__name__ + ".scripts.archs.sfhformer")
    net = sfh.SFHformer(sfh.SFHformerConfig(family, 8, (1, 1, 1, 1, 1)))
    return _save(sfh.official_layout(net), path)


def make_noise_da(path):
    """Tiny Noise-DA RestorationNet in the official training-checkpoint layout."""
    _seeded()
    pack = load_pack()
    nda = importlib.import_module(pack.__name__ + ".scripts.archs.noise_da")
    net = nda.RestorationNet(3, 3, depth=2, width=8)
    return _save(nda.official_layout(net), path)


#: ``_meta.models[].arch`` -> function(path) writing a small random-weight file of that architecture
MODEL_MAKERS: Dict[str, Callable[[str], str]] = {
    "esrgan": make_esrgan,
    "esrgan_x2": lambda p: make_esrgan(p, scale=2),
    "esrgan_x1": lambda p: make_esrgan(p, scale=1),
    "compact": make_compact,
    "scunet": make_scunet,
    "sfhformer": make_sfhformer,
    "sfhformer_lol": lambda p: make_sfhformer(p, family="lol"),
    "noise_da": make_noise_da,
}


#: node class -> (model folder, function(file name) -> maker arch) for model inputs of the pack's nodes
def _realesrgan_arch(name: str) -> str:
    low = name.lower()
    return "compact" if ("realesr-general" in low or "compact" in low or "animevideo" in low) else "esrgan"


MODEL_NODE_FILES = {
    "RestoreKitLoadModel": ("upscale_models", lambda n: "scunet" if "scunet" in n.lower() else _realesrgan_arch(n)),
    "RestoreKitRealESRGAN": ("upscale_models", _realesrgan_arch),
    "RestoreKitSCUNet": ("upscale_models", lambda n: "scunet"),
    "RestoreKitSFHformer": ("restorekit", lambda n: "sfhformer_lol" if "lol" in n.lower() else "sfhformer"),
    "RestoreKitNoiseDA": ("restorekit", lambda n: "noise_da"),
}


def infer_models(prompt: Dict[str, dict]) -> List[dict]:
    """Model files a prompt names in the model inputs of :data:`MODEL_NODE_FILES` nodes (file-name
    values of ``model_name``/``fallback_model``), with the folder and a maker arch; the
    realesr-general files bring their ``-wdn-`` twin (Real-ESRGAN's denoise strength blends the two)."""
    found, seen = [], set()
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") not in MODEL_NODE_FILES:
            continue
        folder, arch_of = MODEL_NODE_FILES[node["class_type"]]
        for key in ("model_name", "fallback_model"):
            value = (node.get("inputs") or {}).get(key)
            if not (isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS)):
                continue
            names = [value]
            if node["class_type"] == "RestoreKitRealESRGAN" and "realesr-general-" in value:
                twin = (value.replace("realesr-general-wdn-", "realesr-general-") if "-wdn-" in value
                        else value.replace("realesr-general-", "realesr-general-wdn-"))
                names.append(twin)
            for name in names:
                if (folder, name) not in seen:
                    seen.add((folder, name))
                    found.append({"folder": folder, "name": name, "arch": arch_of(name), "inferred": True})
    return found


def write_models(example: Example, models_dir: str) -> List[str]:
    """Write the random-weight files ``example`` needs under ``models_dir/<folder>/<name>``.

    Also registers each folder with the pack's runtime so the nodes' model lists see the files.
    """
    from importlib import import_module

    runtime = import_module(load_pack().__name__ + ".scripts.inference.runtime").get_runtime()
    written = []
    for spec in example.models:
        for key in ("folder", "name", "arch"):
            if key not in spec:
                raise ValueError(f"{example.name}: _meta.models entry {spec} lacks '{key}'")
        if spec.get("shipped"):
            shipped = os.path.join(REPO, spec["shipped"])
            if not os.path.isfile(shipped) or os.path.basename(shipped) != spec["name"]:
                raise ValueError(f"{example.name}: shipped model {spec['shipped']} is missing or not named {spec['name']}")
            written.append(shipped)
            continue
        maker = MODEL_MAKERS.get(spec["arch"])
        if maker is None:
            raise ValueError(f"{example.name}: model arch '{spec['arch']}' has no maker "
                             f"(known: {', '.join(sorted(MODEL_MAKERS))})")
        path = os.path.join(models_dir, spec["folder"], spec["name"])
        if not os.path.exists(path):
            maker(path)
        runtime.register_model_folder(spec["folder"], os.path.join(models_dir, spec["folder"]))
        written.append(path)
    return written


# --- in-process execution -----------------------------------------------------------------------
def load_image_file(path: str):
    """ComfyUI LoadImage semantics: (RGB float32 [1,H,W,3], mask [1,H,W] = 1 - alpha or 64x64 zeros)."""
    import torch
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode == "I":
        img = img.point(lambda v: v * (1 / 255))
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(rgb)[None]
    if "A" in img.getbands():
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    elif img.mode == "P" and "transparency" in img.info:
        alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    else:
        mask = torch.zeros((64, 64), dtype=torch.float32)
    return image, mask[None]


def save_image_batch(images, out_dir: str, prefix: str) -> List[str]:
    """ComfyUI SaveImage semantics: each image of the batch as PNG from clip(255*x) uint8."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    arr = images.detach().cpu().float().numpy()
    for i, img in enumerate(arr):
        u8 = np.clip(255.0 * img, 0, 255).astype(np.uint8)
        if u8.shape[-1] == 1:
            u8 = u8[..., 0]
        path = os.path.join(out_dir, f"{prefix.replace('/', '_')}_{i:05d}_.png")
        Image.fromarray(u8).save(path)
        paths.append(path)
    return paths


RunResult = LW.RunResult


def execute_prompt(prompt: Dict[str, dict], out_dir: str, images_dir: str = IMAGES_DIR,
                   classes: Optional[Dict[str, Any]] = None) -> RunResult:
    """Run an API prompt through the library's in-process executor (hybrid/tools/workflow.py) with
    ComfyUI's own LoadImage / SaveImage semantics: LoadImage reads ``images_dir`` (8-bit RGB as core
    does), SaveImage writes 8-bit PNGs into ``out_dir``.  Every node runs (no pruning, no validation:
    the tests validate separately)."""
    with LW._adapter().image_folders(input=images_dir, output=out_dir):
        return LW.execute_prompt(
            prompt, classes if classes is not None else node_classes(),
            load_image=lambda name: load_image_file(os.path.join(images_dir, name)),
            save_image=lambda nid, images, prefix: save_image_batch(images, out_dir, prefix),
            validate=False, only_needed=False)


# --- API -> UI workflow -------------------------------------------------------------------------
NODE_WIDTH = 320
COLUMN_GAP = 60


def _node_size(ct: str, n_widgets: int, n_sockets: int, n_outputs: int) -> List[float]:
    if ct == "LoadImage":
        return [315.0, 314.0]
    if ct in ("SaveImage", "PreviewImage"):
        return [315.0, 270.0]
    if ct == "PreviewAny":
        return [400.0, 200.0]
    return [float(NODE_WIDTH), float(30 + 22 * max(n_sockets, n_outputs) + 24 * n_widgets + 10)]


def widget_values(class_type: str, cls, inputs: dict) -> List[Any]:
    """``widgets_values`` as ComfyUI's frontend saves them: widget inputs in INPUT_TYPES order, the
    prompt's value (or the default when absent or linked), plus a 'control_after_generate' value
    after seed-like INTs and the 'upload' widget's value after LoadImage's image."""
    values = []
    for spec in input_specs(cls):
        if not spec.is_widget:
            continue
        value = inputs.get(spec.name, spec.options.get("default"))
        if is_link(value) or value is None:
            value = spec.options.get("default", (spec.choices or [None])[0])
        values.append(value)
        if spec.control_after_generate:
            values.append("fixed")
        if spec.options.get("image_upload"):
            values.append("image")
    return values


ui_widget_map = LW.ui_widget_map


def api_to_ui(example: Example, classes: Optional[Dict[str, Any]] = None) -> dict:
    """The UI-format workflow (ComfyUI frontend's saved JSON, version 0.4) of an API example.

    Nodes keep their API ids; links are numbered in (target node, input) order; nodes are placed in
    columns by link depth; the description goes into a MarkdownNote beside the graph.
    """
    classes = classes if classes is not None else node_classes()
    prompt = example.prompt
    order = topo_order(prompt)
    depth: Dict[str, int] = {}
    for nid in order:
        ins = [v[0] for v in prompt[nid]["inputs"].values() if is_link(v)]
        depth[nid] = 1 + max((depth[s] for s in ins), default=-1)

    nodes, links = {}, []
    out_links: Dict[Tuple[str, int], List[int]] = {}
    for nid in sorted(prompt, key=int):
        ct = prompt[nid]["class_type"]
        cls = classes[ct]
        inputs_v = prompt[nid]["inputs"]
        sockets = []
        for spec in input_specs(cls):
            value = inputs_v.get(spec.name)
            if not spec.is_widget:
                entry = {"name": spec.name, "type": spec.type, "link": None}
                if not spec.required:
                    entry["shape"] = 7
                sockets.append((entry, value))
        for spec in input_specs(cls):
            value = inputs_v.get(spec.name)
            if spec.is_widget and is_link(value):
                sockets.append(({"name": spec.name, "type": spec.type, "widget": {"name": spec.name},
                                 "link": None}, value))
        for slot, (entry, value) in enumerate(sockets):
            if is_link(value):
                link_id = len(links) + 1
                src_type = classes[prompt[value[0]]["class_type"]].RETURN_TYPES[value[1]]
                links.append([link_id, int(value[0]), value[1], int(nid), slot, src_type])
                entry["link"] = link_id
                out_links.setdefault((value[0], value[1]), []).append(link_id)
        rtypes = list(getattr(cls, "RETURN_TYPES", ()))
        outputs = [{"name": n, "type": t, "slot_index": i, "links": None}
                   for i, (n, t) in enumerate(zip(output_names(cls), rtypes))]
        wv = widget_values(ct, cls, inputs_v)
        node = {
            "id": int(nid), "type": ct, "pos": [0.0, 0.0],
            "size": _node_size(ct, len(wv), len(sockets), len(outputs)),
            "flags": {}, "order": order.index(nid), "mode": 0,
            "inputs": [e for e, _ in sockets], "outputs": outputs,
            "properties": {"Node name for S&R": ct},
            "widgets_values": wv,
        }
        title = (prompt[nid].get("_meta") or {}).get("title")
        if title and title != display_name(ct):
            node["title"] = title
        nodes[nid] = node
    for (src, slot), ids in out_links.items():
        nodes[src]["outputs"][slot]["links"] = ids

    # layout: one column per depth, nodes stacked in id order
    x0, y0, columns = 0.0, 0.0, {}
    for nid in sorted(prompt, key=int):
        columns.setdefault(depth[nid], []).append(nid)
    x = x0
    for d in sorted(columns):
        y = y0
        width = max(nodes[n]["size"][0] for n in columns[d])
        for nid in columns[d]:
            nodes[nid]["pos"] = [x, y]
            y += nodes[nid]["size"][1] + 50
        x += width + COLUMN_GAP
    node_list = [nodes[n] for n in sorted(nodes, key=int)]
    last_id = max(int(n) for n in prompt)
    bottom = max(n["pos"][1] + n["size"][1] for n in node_list)

    if example.description:
        last_id += 1
        node_list.append({
            "id": last_id, "type": "MarkdownNote", "pos": [x0, bottom + 80.0], "size": [max(x - COLUMN_GAP, 400.0), 160.0],
            "flags": {}, "order": len(order), "mode": 0, "inputs": [], "outputs": [],
            "title": "About this example", "properties": {},
            "widgets_values": [f"## {example.title}\n\n{example.description}"],
            "color": "#432", "bgcolor": "#653",
        })
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"restorekit/examples/{example.name}")),
        "revision": 0,
        "last_node_id": last_id,
        "last_link_id": len(links),
        "nodes": node_list,
        "links": links,
        "groups": [{
            "id": 1, "title": example.title,
            "bounding": [x0 - 20.0, y0 - 60.0, x - COLUMN_GAP + 40.0, bottom - y0 + 80.0],
            "color": "#3f789e", "font_size": 24, "flags": {},
        }],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [60.0, 80.0]},
                  "restorekit": {"api": f"api/{example.name}.json"}},
        "version": 0.4,
    }


def ui_to_api_view(workflow: dict, classes: Optional[Dict[str, Any]] = None) -> Dict[str, dict]:
    """Read a UI workflow back as {node id: {class_type, widgets: {name: value}, links: {input: [src, slot]}}}.

    Used to check a UI workflow against its API twin (notes are skipped).
    """
    classes = classes if classes is not None else node_classes()
    links = {l[0]: l for l in workflow["links"]}
    view = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_TYPES:
            continue
        cls = classes[node["type"]]
        widgets = ui_widget_map(node["type"], cls, node.get("widgets_values") or [])
        wired = {}
        for slot, entry in enumerate(node.get("inputs", [])):
            if entry.get("link") is not None:
                l = links[entry["link"]]
                assert l[3] == node["id"] and l[4] == slot, f"link {l} does not end at node {node['id']} slot {slot}"
                wired[entry["name"]] = [str(l[1]), l[2]]
                widgets.pop(entry["name"], None)
        view[str(node["id"])] = {"class_type": node["type"], "widgets": widgets, "links": wired}
    return view


def api_view(prompt: Dict[str, dict], classes: Optional[Dict[str, Any]] = None) -> Dict[str, dict]:
    """The same view as :func:`ui_to_api_view`, from the API prompt (defaults filled for absent widgets)."""
    classes = classes if classes is not None else node_classes()
    view = {}
    for nid, node in prompt.items():
        cls = classes[node["class_type"]]
        widgets, wired = {}, {}
        for spec in input_specs(cls):
            value = node["inputs"].get(spec.name)
            if is_link(value):
                wired[spec.name] = list(value)
            elif spec.is_widget:
                widgets[spec.name] = value if spec.name in node["inputs"] else spec.options.get("default")
        view[str(nid)] = {"class_type": node["class_type"], "widgets": widgets, "links": wired}
    return view


# --- thumbnails ---------------------------------------------------------------------------------
def thumbnail(images, path: str, max_side: int = 256, quality: int = 85) -> str:
    """Write the first image of an IMAGE batch as a JPEG no larger than ``max_side`` px."""
    from PIL import Image

    arr = images[0].detach().cpu().float().numpy()
    u8 = np.clip(255.0 * arr, 0, 255).astype(np.uint8)
    if u8.shape[-1] == 1:
        u8 = np.repeat(u8, 3, axis=-1)
    img = Image.fromarray(u8[..., :3])
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img.save(path, "JPEG", quality=quality, optimize=True)
    return path


def final_image(result: RunResult):
    """The image of the highest-id SaveImage node (the example's result)."""
    nid = max(result.saved, key=int)
    return result.images[nid]
