"""The pack as ComfyUI sees it: imports under any folder name, and every node's schema is valid."""
import math
import os
import subprocess
import sys
import uuid

import pytest
import torch

from _repo import REPO, load_pack

COMFY_TYPES = {"IMAGE", "MASK", "STRING", "INT", "FLOAT", "BOOLEAN", "LATENT", "MODEL", "CLIP", "VAE",
               "CONDITIONING", "UPSCALE_MODEL", "*"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _nodes():
    pack = sys.modules["restorekit"]
    return sorted(pack.NODE_CLASS_MAPPINGS.items())


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}, spec.keys()
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            yield section, name, decl


def test_pack_loads_under_an_arbitrary_folder_name():
    name = f"custom_pack_{uuid.uuid4().hex[:8]}"
    pack = load_pack(name)
    assert pack.NODE_CLASS_MAPPINGS and set(pack.NODE_CLASS_MAPPINGS) == set(sys.modules["restorekit"].NODE_CLASS_MAPPINGS)
    assert all(m.startswith(name) for m in sys.modules if m.startswith(name))


def test_every_node_family_imported():
    assert sys.modules["restorekit"].NODE_IMPORT_ERRORS == {}


def test_no_absolute_imports_of_the_pack():
    offenders = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "tests", "benchmarks", "__pycache__")]
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(root, f), encoding="utf-8").read()
                for bad in ("from restorekit", "import restorekit", "from scripts", "from nodes", "from hybrid", "import scripts"):
                    if f"\n{bad}" in text or text.startswith(bad):
                        offenders.append(f"{f}: {bad}")
    assert offenders == []


def test_loading_the_pack_imports_nothing_heavy():
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest; "
        "heavy = {'cv2', 'skimage', 'sklearn', 'spandrel', 'bm3d', 'tensorflow', 'keras', 'colour', 'scipy', 'pywt', 'joblib'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"pack import pulled in: {out.stdout.strip()}"


@pytest.mark.parametrize("node_id,cls", _nodes())
def test_node_schema(node_id, cls):
    pack = sys.modules["restorekit"]
    assert node_id.startswith("RestoreKit")
    assert pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id), f"{node_id} has no display name"
    assert cls.CATEGORY.startswith("RestoreKit")
    assert callable(getattr(cls, cls.FUNCTION, None)), f"{node_id}.FUNCTION {cls.FUNCTION} missing"
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    names = getattr(cls, "RETURN_NAMES", None)
    assert names is None or len(names) == len(cls.RETURN_TYPES)
    for t in cls.RETURN_TYPES:
        assert isinstance(t, str) and (t in COMFY_TYPES or t.startswith("RESTOREKIT_")), t
    for section, name, decl in _inputs(cls):
        assert isinstance(decl, tuple) and 1 <= len(decl) <= 2, (name, decl)
        kind = decl[0]
        opts = decl[1] if len(decl) > 1 else {}
        assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if isinstance(kind, list):
            assert all(isinstance(v, str) for v in kind), f"{node_id}.{name} combo values must be strings"
            if kind and "default" in opts:
                assert opts["default"] in kind, f"{node_id}.{name} default {opts['default']!r} not in choices"
            continue
        assert kind in COMFY_TYPES or kind.startswith("RESTOREKIT_"), f"{node_id}.{name}: unknown type {kind}"
        if kind in ("INT", "FLOAT") and "default" in opts:
            lo, hi, d = opts.get("min", -math.inf), opts.get("max", math.inf), opts["default"]
            assert lo <= d <= hi, f"{node_id}.{name}: default {d} outside [{lo}, {hi}]"
            if kind == "INT":
                assert all(isinstance(opts[k], int) for k in ("default", "min", "max", "step") if k in opts)
        if kind == "BOOLEAN" and "default" in opts:
            assert isinstance(opts["default"], bool)


def _default(decl):
    kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
    if isinstance(kind, list):
        return opts.get("default", kind[0] if kind else None)
    return opts.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind))


def _runnable_with_defaults(cls):
    for section, name, decl in _inputs(cls):
        if section != "required":
            continue
        kind = decl[0]
        if isinstance(kind, list):
            if not kind:
                return False
        elif kind not in WIDGET_TYPES and kind != "IMAGE":
            return False
    return True


RUNNABLE = [(k, c) for k, c in _nodes() if _runnable_with_defaults(c)]


@pytest.mark.parametrize("node_id,cls", RUNNABLE)
def test_node_runs_with_defaults_and_returns_its_types(node_id, cls):
    image = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(0))
    kwargs = {}
    for section, name, decl in _inputs(cls):
        if section == "required":
            kwargs[name] = image if decl[0] == "IMAGE" else _default(decl)
    result = getattr(cls(), cls.FUNCTION)(**kwargs)
    if isinstance(result, dict):
        result = result["result"]
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
    for value, kind in zip(result, cls.RETURN_TYPES):
        if kind == "IMAGE":
            assert isinstance(value, torch.Tensor) and value.ndim == 4 and value.dtype == torch.float32
            assert torch.isfinite(value).all() and value.min() >= 0 and value.max() <= 1
        elif kind == "MASK":
            assert isinstance(value, torch.Tensor) and value.ndim == 3
        elif kind == "STRING":
            assert isinstance(value, str) and value.strip()


def _current_inputs(cls):
    out = []
    for section, name, decl in _inputs(cls):
        kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
        out.append((section, name, "COMBO" if isinstance(kind, list) else kind, list(kind) if isinstance(kind, list) else None, opts))
    return out


def test_schema_compatible_with_saved_workflows():
    """Every node id, display name, output list, input name, type, section, default and range of the
    pack as it was at 07fa2e8 (tests/fixtures/legacy_schema.json) is still there, with the widget order
    unchanged (UI workflows store widget values by position) and every choice still offered; inputs
    added since are optional, so prompts saved before them still validate; outputs added since come
    after the old ones, so links saved by output index still point at the same output."""
    import json

    with open(os.path.join(REPO, "tests", "fixtures", "legacy_schema.json"), encoding="utf-8") as f:
        legacy = json.load(f)
    pack = sys.modules["restorekit"]
    for node_id, old in legacy.items():
        cls = pack.NODE_CLASS_MAPPINGS.get(node_id)
        assert cls is not None, f"node id {node_id} is gone"
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id] == old["display_name"], node_id
        # outputs may only be appended: a saved link names its output by index
        assert list(cls.RETURN_TYPES)[:len(old["return_types"])] == old["return_types"], node_id
        assert cls.FUNCTION == old["function"], node_id
        now = {name: (section, kind, choices, opts) for section, name, kind, choices, opts in _current_inputs(cls)}
        for entry in old["inputs"]:
            name = entry["name"]
            assert name in now, f"{node_id}.{name} is gone"
            section, kind, choices, opts = now[name]
            assert (section, kind) == (entry["section"], entry["type"]), f"{node_id}.{name}"
            for key in ("default", "min", "max"):
                if key in entry:
                    assert opts.get(key) == entry[key], f"{node_id}.{name} {key}: {opts.get(key)} != {entry[key]}"
            if "choices" in entry:
                assert set(entry["choices"]) <= set(choices), f"{node_id}.{name} lost choices"
        old_names = [e["name"] for e in old["inputs"]]
        assert [n for n in now if n in old_names] == old_names, f"{node_id}: input order changed"
        for name, (section, *_rest) in now.items():
            assert name in old_names or section == "optional", f"{node_id}.{name}: a new input must be optional"


def test_readme_layout_matches_the_tree():
    """The README's layout tables name every module of nodes/, scripts/ and hybrid/, and every module
    they name exists; every node's module and library are in the node table."""
    import re

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    layout = readme[readme.index("## Layout"):readme.index("## Benchmarks")]
    named = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*\.py)", layout))
    tree = {f for f in os.listdir(REPO) if f.endswith(".py") and f != "__init__.py"}
    for top in ("nodes", "scripts", "hybrid"):
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            tree |= {f for f in files if f.endswith(".py") and f != "__init__.py"}
    assert tree - named == set(), f"modules missing from the README layout: {sorted(tree - named)}"
    extra = named - tree - {"__init__.py", "_repo.py"}
    assert extra == set(), f"README names modules that do not exist: {sorted(extra)}"
    pack = sys.modules["restorekit"]
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        module = cls.__module__.rsplit(".", 1)[-1] + ".py"
        assert f"`nodes/{module}`" in layout, f"{node_id}: nodes/{module} is not in the node table"
