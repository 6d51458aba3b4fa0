"""The source registry (hybrid/tools/sources.py): reserved images never load, splits by source image and
by family, deterministic, loaders return float32 RGB 0..1."""
import json
import os
import re

import numpy as np
import pytest

from restorekit.hybrid.tools import damage, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reserved_md():
    for p in (os.path.join(REPO, "..", "shared", "RESERVED_IMAGES.md"), "/work/shared/RESERVED_IMAGES.md"):
        if os.path.isfile(p):
            return p
    return None


def test_reserved_list_covers_the_shared_reservation():
    path = _reserved_md()
    if path is None:
        pytest.skip("shared/RESERVED_IMAGES.md is not beside this checkout")
    text = open(path, encoding="utf-8").read()
    templates = re.findall(r"`([^`]+-\d+\.webp)`", text)
    assert templates, "no template files found in RESERVED_IMAGES.md"
    for f in templates:
        assert sources.is_reserved("comfyui-workflow-templates-media-image", f), f
        # every variant of the same stem too
        stem = sources.picture_stem(f)
        assert sources.is_reserved("comfyui-workflow-templates-media-other", f"{stem}-7.png")
    for name in re.findall(r"`pywt\.data\.(\w+)\(\)`", text):
        assert sources.is_reserved("PyWavelets", name)
    assert sources.is_reserved("matplotlib", "grace_hopper.jpg")
    assert sources.is_reserved("scipy", "face.dat")


@pytest.mark.parametrize("name", ["ascent", "aero", "face", "grace_hopper", "tpl-image/flux_schnell-1",
                                  "tpl-image/flux_schnell-2", "tpl-assets-01/default-3",
                                  "tpl-image/sd3.5_large_blur-2"])
def test_loader_refuses_reserved_images(name):
    with pytest.raises(sources.ReservedImageError, match="reserved"):
        sources.load(name)


def test_stem_rule():
    r = sources.is_reserved
    pkg = "comfyui-workflow-templates-media-image"
    assert r(pkg, "flux_schnell-1.webp") and r(pkg, "flux_schnell-12.webp") and r(pkg, "FLUX_SCHNELL-2.webp")
    assert r(pkg, "flux_schnell_full_text_to_image-1.webp")  # extends a reserved stem
    assert not r(pkg, "flux_schnell2_other-1.webp") and not r(pkg, "defaults_pack-1.webp")
    assert not r(pkg, "image_qwen_image-1.webp")
    assert sources.picture_stem("a-b-3.webp") == "a-b" and sources.picture_stem("plain.png") == "plain"
    assert sources.picture_stem("sd3.5_large_blur-2") == "sd3.5_large_blur"


def test_registry_and_template_loader_skip_reserved_files(tmp_path, monkeypatch):
    """Whatever the curated list says, a reserved file is never registered nor loaded."""
    from PIL import Image

    tdir = tmp_path / "templates"
    tdir.mkdir()
    for f in ("flux_schnell-2.webp", "my_photo-1.webp"):
        Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tdir / f)
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"families": {"tpl-image": [
        {"file": "flux_schnell-2.webp", "kind": "photo"}, {"file": "my_photo-1.webp", "kind": "photo"}]}}))
    monkeypatch.setattr(sources, "_CURATED", str(listing))
    monkeypatch.setattr(sources, "_template_dir", lambda family: str(tdir))
    sources.registry.cache_clear()
    sources._held_out_groups.cache_clear()
    try:
        reg = sources.registry()
        assert "tpl-image/my_photo-1" in reg and "tpl-image/flux_schnell-2" not in reg
        img = sources.load("tpl-image/my_photo-1", None)
        assert img.shape == (40, 60, 3) and img.dtype == np.float32
        assert img.max() == pytest.approx(128 / 255)
        with pytest.raises(sources.ReservedImageError):
            sources.load_template_file("tpl-image", "flux_schnell-2.webp")
        with pytest.raises(sources.ReservedImageError):
            sources.load("tpl-image/flux_schnell-2")
    finally:
        sources.registry.cache_clear()
        sources._held_out_groups.cache_clear()


def test_curated_list_has_no_reserved_file_and_every_family_has_a_licence():
    cur = sources.curated_templates()
    assert cur, "template_sources.json is missing"
    for fam, items in cur.items():
        assert fam in sources.FAMILIES and "MIT" in sources.FAMILIES[fam]["licence"]
        for it in items:
            assert not sources.is_reserved(sources.FAMILIES[fam]["package"], it["file"]), it
    for s in sources.registry().values():
        assert s.licence and s.family in sources.FAMILIES


def test_splits_are_by_source_and_family_and_deterministic():
    reg = sources.registry()
    split = {n: sources.split_of(n) for n in reg}
    assert split == {n: sources.split_of(n) for n in reg}
    # the held-out family is test_family, whole, and nothing else is
    for n, s in reg.items():
        assert (split[n] == "test_family") == (s.family == sources.HELD_OUT_FAMILY)
    # the shipped models' split is kept for the skimage / sklearn sources
    for sp, names in damage.SPLITS.items():
        for n in names:
            assert split[n] == sp, n
    # variants of one picture never straddle splits
    by_group = {}
    for n, s in reg.items():
        if split[n] is not None:
            by_group.setdefault(s.group.lower(), set()).add(split[n])
    assert all(len(v) == 1 for v in by_group.values()), {g: v for g, v in by_group.items() if len(v) > 1}
    # split_names agrees, sorted and disjoint
    names = {sp: set(sources.split_names(sp, installed_only=False)) for sp in sources.SPLIT_NAMES}
    for a in sources.SPLIT_NAMES:
        for b in sources.SPLIT_NAMES:
            if a < b:
                assert not names[a] & names[b]
    assert {"chelsea", "rocket", "brick"} <= names["test"] and {"flower", "moon"} <= names["val"]
    with pytest.raises(ValueError, match="split"):
        sources.split_names("holdout")


def test_families_table_counts_add_up():
    for row in sources.table():
        assert row["sources"] == sum(row[s] for s in sources.SPLIT_NAMES) + row["left_out"]


@pytest.mark.parametrize("name", ["camera", "astronaut", "china", "motorcycle"])
def test_loader_returns_float_rgb(name):
    img = sources.load(name, 96)
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
    assert max(img.shape[:2]) <= 96 and 0 <= img.min() and img.max() <= 1
    if name == "camera":  # greyscale source: replicated
        assert np.array_equal(img[..., 0], img[..., 2])
    # the old name keeps working through damage.load_source
    assert np.array_equal(damage.load_source(name, 96), img)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown source"):
        sources.load("no_such_picture")


def test_missing_family_wheel_is_reported(monkeypatch):
    names = [n for n, s in sources.registry().items() if s.family == "tpl-other"]
    if not names:
        pytest.skip("no curated tpl-other sources")
    monkeypatch.setattr(sources, "_template_dir", lambda family: None)
    assert not sources.available("tpl-other")
    assert sources.split_names("train", families=["tpl-other"]) == []
    with pytest.raises(FileNotFoundError, match="pip install"):
        sources.load(names[0])


def test_template_family_loads_when_installed():
    fams = [f for f in sources.FAMILIES if f.startswith("tpl-") and sources.available(f)]
    if not fams:
        pytest.skip("no comfyui-workflow-templates media wheel installed (optional: pip install 'comfyui-restorekit[data]')")
    name = sources.split_names("train", families=fams[:1])[0]
    img = sources.load(name, 128)
    assert img.dtype == np.float32 and img.shape[2] == 3 and max(img.shape[:2]) == 128


def test_pairs_and_crops_are_deterministic():
    a = sources.make_pairs("test", per_level=1, max_side=64, families=["skimage"])
    b = sources.make_pairs("test", per_level=1, max_side=64, families=["skimage"])
    assert [(p["source"], p["level"], p["seed"]) for p in a] == [(p["source"], p["level"], p["seed"]) for p in b]
    assert {p["source"] for p in a} == {"brick", "chelsea", "rocket"}
    assert all(np.array_equal(p["damaged"], q["damaged"]) for p, q in zip(a, b))
    s = sources.CropSampler(names=["coffee", "camera"], sides=(96,))
    c1 = s.sample(np.random.default_rng(3), 48)
    c2 = s.sample(np.random.default_rng(3), 48)
    assert np.array_equal(c1[0], c2[0]) and np.array_equal(c1[1], c2[1]) and c1[2]["source"] == c2[2]["source"]
    assert c1[0].shape == (48, 48, 3) and c1[2]["mask"].shape == (48, 48)
