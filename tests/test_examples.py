"""Every shipped example is valid for ComfyUI, runs through the pack's own nodes, and its UI twin agrees.

API prompts live in examples/api/*.json (each file is the body of POST /prompt, see tests/_workflows.py);
UI workflows (what ComfyUI's Save writes) in examples/*.json with a .jpg thumbnail beside each.
Regenerate the UI files and thumbnails with `.venv/bin/python tests/make_examples.py`.
"""
import json
import os

import numpy as np
import pytest
import torch

import _workflows as W

EXAMPLES = W.load_examples()
NAMES = [e.name for e in EXAMPLES]
BY_NAME = {e.name: e for e in EXAMPLES}
#: the API examples as they were before the node internals were rebuilt (see tests/fixtures/README.md)
LEGACY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy_examples")
LEGACY = {e.name: e for e in W.load_examples(LEGACY_DIR)}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("example_models"))


def _prepare(example, models_dir):
    """Write the example's random-weight model files; skip if a node it needs is absent from the pack."""
    classes = W.node_classes()
    missing = sorted({n["class_type"] for n in example.prompt.values()
                      if isinstance(n, dict) and n.get("class_type") not in classes})
    if missing and example.models:
        pytest.skip(f"{example.name}: node(s) {missing} not in this pack build "
                    f"(import errors: {W.load_pack().NODE_IMPORT_ERRORS or 'none'})")
    W.write_models(example, models_dir)
    return classes


def test_examples_exist():
    assert EXAMPLES, "no API examples in examples/api/"
    assert "old_photo_chain" in NAMES
    images = W.image_files()
    assert images, "no sample inputs in examples/images/"
    used = {n["inputs"]["image"] for e in EXAMPLES for n in e.prompt.values()
            if isinstance(n, dict) and n.get("class_type") == "LoadImage"}
    assert used <= set(images), f"examples load images that are not shipped: {sorted(used - set(images))}"


@pytest.mark.parametrize("name", NAMES)
def test_api_example_is_the_post_body(name):
    """`curl -d @examples/api/X.json .../prompt` works as shipped; model files are declared."""
    errors = W.validate_body(BY_NAME[name])
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", NAMES)
def test_api_example_valid_and_runs(name, models_dir, tmp_path):
    example = BY_NAME[name]
    classes, result = _run_and_check(example, models_dir, str(tmp_path))
    for nid, paths in result.saved.items():
        images = result.images[nid]
        assert images.ndim == 4 and images.shape[0] >= 1 and images.shape[1] > 0 and images.shape[2] > 0
        assert images.dtype == torch.float32
        assert torch.isfinite(images).all(), f"{name}: node {nid} got NaN/inf pixels"
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert float(images.std()) > 1e-3, f"{name}: node {nid} saved a flat image"
        for p in paths:
            assert os.path.getsize(p) > 0
    for nid, node in example.prompt.items():
        cls = classes[node["class_type"]]
        for slot, kind in enumerate(getattr(cls, "RETURN_TYPES", ())):
            if kind == "STRING" and node["class_type"].startswith("RestoreKit"):
                info = result.outputs[nid][slot]
                assert isinstance(info, str) and info.strip(), f"{name}: node {nid} returned an empty info"


def _run_and_check(example, models_dir, out_dir):
    classes = _prepare(example, models_dir)
    errors = W.validate_prompt(example.prompt, classes, where=example.name)
    assert not errors, "\n".join(errors)
    result = W.execute_prompt(example.prompt, out_dir, classes=classes)
    assert result.saved, f"{example.name}: no SaveImage output"
    return classes, result


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_example_still_loads_and_runs(name, models_dir, tmp_path):
    """A prompt saved before the node internals were rebuilt still validates (same node ids, input
    names, choices and ranges) and runs, giving finite images in 0..1.  A legacy prompt identical to
    the shipped example is only validated here: test_api_example_valid_and_runs runs it."""
    example = LEGACY[name]
    if name in BY_NAME and BY_NAME[name].prompt == example.prompt:
        errors = W.validate_prompt(example.prompt, _prepare(example, models_dir), where=name)
        assert not errors, "\n".join(errors)
        return
    _classes, result = _run_and_check(example, models_dir, str(tmp_path))
    for nid in result.saved:
        images = result.images[nid]
        assert torch.isfinite(images).all() and float(images.min()) >= 0.0 and float(images.max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_api(name, models_dir):
    example = BY_NAME[name]
    ui_path = os.path.join(W.EXAMPLES_DIR, name + ".json")
    assert os.path.isfile(ui_path), f"missing UI workflow {ui_path}: run tests/make_examples.py"
    classes = _prepare(example, models_dir)
    with open(ui_path, encoding="utf-8") as f:
        ui = json.load(f)
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in ui, f"{name}.json lacks '{key}'"
    assert ui["version"] == 0.4
    ids = [n["id"] for n in ui["nodes"]]
    assert len(ids) == len(set(ids)) and ui["last_node_id"] >= max(ids)
    link_ids = [l[0] for l in ui["links"]]
    assert len(link_ids) == len(set(link_ids)) and ui["last_link_id"] >= max(link_ids, default=0)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, sslot, dst, dslot, kind in ui["links"]:
        assert lid in (nodes[src]["outputs"][sslot]["links"] or [])
        assert nodes[dst]["inputs"][dslot]["link"] == lid
        assert W.types_match(kind, nodes[dst]["inputs"][dslot]["type"])
    for n in ui["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in n, f"{name}.json node {n.get('id')} lacks '{key}'"
    # same nodes, same wiring, same widget values
    assert W.ui_to_api_view(ui, classes) == W.api_view(example.prompt, classes)
    # and the file is what the generator writes now (no hand edits drifting from the API twin)
    assert ui == json.loads(json.dumps(W.api_to_ui(example, classes)))

    thumb = os.path.join(W.EXAMPLES_DIR, name + ".jpg")
    assert os.path.isfile(thumb), f"missing thumbnail {thumb}: run tests/make_examples.py"
    from PIL import Image

    with Image.open(thumb) as im:
        assert im.format == "JPEG" and max(im.size) <= 256


def test_every_ui_workflow_has_an_api_twin():
    tops = sorted(f[:-5] for f in os.listdir(W.EXAMPLES_DIR) if f.endswith(".json"))
    assert sorted(set(tops) - set(NAMES)) == []


# --- the checker itself must catch mistakes ---------------------------------------------------------
GOOD = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "Fake", "inputs": {"image": ["1", 0], "amount": 0.5, "seed": 3, "mode": "a"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
}


class _Fake:
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "amount": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 99}),
                             "mode": (["a", "b"], {"default": "a"})},
                "optional": {"mask": ("MASK",)}}

    def run(self, image, amount, seed, mode, mask=None):
        return (image * amount, f"amount {amount} seed {seed} mode {mode}")


class _Load(W._LoadImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (["x.png"], {"image_upload": True})}}


FAKE_CLASSES = dict(W.CORE_SCHEMAS, LoadImage=_Load, Fake=_Fake)


def _with(node, **inputs):
    p = json.loads(json.dumps(GOOD))
    p[node]["inputs"].update(inputs)
    return p


@pytest.mark.parametrize("prompt, needle", [
    (_with("2", amount=2.5), "above max"),
    (_with("2", amount=-1), "below min"),
    (_with("2", seed=1.5), "must be an integer"),
    (_with("2", mode="c"), "not in the choice list"),
    (_with("2", image=["9", 0]), "missing or unknown node"),
    (_with("2", image=["1", 5]), "has 2 output"),
    (_with("2", image=["1", 1]), "wants IMAGE"),
    (_with("2", amout=1.0), "unknown input 'amout'"),
    ({k: v for k, v in GOOD.items() if k != "3"}, "no output node"),
    (dict(GOOD, **{"4": {"class_type": "Nope", "inputs": {}}}), "unknown class_type"),
    (dict(GOOD, **{"4": {"class_type": "Fake", "inputs": {"image": ["1", 0], "amount": 1.0, "seed": 0,
                                                          "mode": "a"}}}), "feed no output node"),
    (_with("1", image="y.png"), "not in the choice list"),
])
def test_validator_catches(prompt, needle):
    errors = W.validate_prompt(prompt, FAKE_CLASSES)
    assert any(needle in e for e in errors), errors


def test_validator_required_and_cycle():
    p = json.loads(json.dumps(GOOD))
    del p["2"]["inputs"]["amount"]
    assert any("required input 'amount' missing" in e for e in W.validate_prompt(p, FAKE_CLASSES))
    p = _with("2", image=["3", 0])
    p["3"]["inputs"]["images"] = ["2", 0]
    assert any("cycle" in e for e in W.validate_prompt(p, FAKE_CLASSES))
    assert W.validate_prompt(GOOD, FAKE_CLASSES) == []


def test_ui_conversion_widgets_links_and_seed_control():
    ex = W.Example("t", "t.json", GOOD, {"description": "d"}, {"prompt": GOOD})
    ui = W.api_to_ui(ex, FAKE_CLASSES)
    nodes = {n["id"]: n for n in ui["nodes"]}
    # INPUT_TYPES order; 'fixed' after the seed INT (the frontend's control_after_generate); upload after image
    assert nodes[2]["widgets_values"] == [0.5, 3, "fixed", "a"]
    assert nodes[1]["widgets_values"] == ["x.png", "image"]
    assert nodes[3]["widgets_values"] == ["t"]
    assert ui["links"] == [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]
    assert [i["name"] for i in nodes[2]["inputs"]] == ["image", "mask"] and nodes[2]["inputs"][1]["shape"] == 7
    assert nodes[2]["outputs"][0]["links"] == [2] and nodes[2]["outputs"][1]["links"] is None
    assert [nodes[i]["order"] for i in (1, 2, 3)] == [0, 1, 2]
    assert nodes[4]["type"] == "MarkdownNote" and ui["last_node_id"] == 4
    assert W.ui_to_api_view(ui, FAKE_CLASSES) == W.api_view(GOOD, FAKE_CLASSES)
    # a changed widget value in the UI file is noticed
    nodes[2]["widgets_values"][0] = 0.7
    assert W.ui_to_api_view(ui, FAKE_CLASSES) != W.api_view(GOOD, FAKE_CLASSES)


def test_execute_runs_in_order_and_saves(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    res = W.execute_prompt(GOOD, str(tmp_path / "out"), images_dir=str(tmp_path), classes=FAKE_CLASSES)
    assert res.order == ["1", "2", "3"]
    assert res.outputs["2"][1] == "amount 0.5 seed 3 mode a"
    saved = np.asarray(Image.open(res.saved["3"][0]), dtype=np.float64)
    src = np.asarray(Image.open(tmp_path / "x.png"), dtype=np.float64)
    assert np.abs(saved - np.clip(np.floor(src * 0.5 + 1e-6), 0, 255)).max() <= 1.0


def test_load_image_matches_comfyui_semantics(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 64
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img, mask = W.load_image_file(str(tmp_path / "a.png"))
    assert img.shape == (1, 8, 10, 3) and mask.shape == (1, 8, 10)
    assert torch.allclose(mask, torch.full_like(mask, 1 - 64 / 255))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.png")
    img, mask = W.load_image_file(str(tmp_path / "b.png"))
    assert mask.shape == (1, 64, 64) and float(mask.abs().sum()) == 0.0
    assert float(img[0, 0, 0, 0]) == 1.0
