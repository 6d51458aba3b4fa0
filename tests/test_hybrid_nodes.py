"""Hybrid nodes (nodes/hybrid.py) and the CLI (hybrid/tools/cli.py)."""
import json
import os

import numpy as np
import pytest
import torch

from restorekit.hybrid import engine
from restorekit.hybrid.tools import cli, damage
from restorekit.scripts.batch import map_images
from restorekit.nodes import hybrid as nodes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    clean = damage.load_source("chelsea", 64)[:40, :56]
    a = damage.damage_image(clean, "severe", 1)[0]
    b = damage.damage_image(clean, "light", 2)[0]
    return torch.from_numpy(np.stack([a, b]))


def test_input_types_have_tooltips_and_valid_defaults():
    for cls in nodes.NODE_CLASS_MAPPINGS.values():
        types = cls.INPUT_TYPES()
        for name, spec in {**types["required"], **types.get("optional", {})}.items():
            assert "tooltip" in spec[1], name
            if isinstance(spec[0], str) and spec[0] in ("FLOAT", "INT"):
                assert spec[1]["min"] <= spec[1]["default"] <= spec[1]["max"], name
            elif isinstance(spec[0], list):
                assert spec[1]["default"] in spec[0], name


def test_hybrid_examples_use_the_calibrated_defaults():
    """The example prompts carry the engine's calibrated thresholds and estimator (hybrid/engine.py)."""
    from restorekit.hybrid.engine import Thresholds

    d = Thresholds()
    root = os.path.join(os.path.dirname(__file__), "..", "examples", "api")
    seen = 0
    for name in ("hybrid_restore.json", "damage_analysis.json"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            prompt = json.load(f)["prompt"]
        for node in prompt.values():
            if node["class_type"] in nodes.NODE_CLASS_MAPPINGS:
                i = node["inputs"]
                assert (i["light_min_db"], i["severe_max_db"], i["estimator"]) == (
                    d.light_min_db, d.severe_max_db, d.estimator), name
                seen += 1
    assert seen == 3


def _library_call(image, strategy, light=28.0, severe=24.0):
    """The Hybrid Restore node's library call: the shared restorer per image through the batch mapper."""
    restorer = engine.shared_restorer(engine.Thresholds(light, severe), "cpu")
    return map_images(image, lambda rgb: restorer.restore(rgb, strategy), what="Hybrid Restore",
                      values="as_is", grey="rgb_and_back")


def test_hybrid_restore_batch_and_report(batch):
    img, info, _ = nodes.RestoreKitHybridRestore().restore(batch, "auto", 28.0, 24.0, "cpu")
    assert img.shape == batch.shape and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    ref, report = _library_call(batch, "auto")
    # the bm3d package's first call in a process differs from later ones by ~4e-6 (its FFT plans)
    assert torch.allclose(img, ref, atol=2e-5, rtol=0) and len(report.items) == 2
    assert all(r.method in ("classical", "ml_guided", "deep_learning") and r.strategy == "auto" for r in report.items)


def test_forced_strategy_rgba_and_grey(batch):
    node = nodes.RestoreKitHybridRestore()
    alpha = torch.rand(batch.shape[:3] + (1,))
    rgba = torch.cat([batch, alpha], -1)
    out, info, _ = node.restore(rgba, "classical", 28.0, 24.0, "cpu")
    assert out.shape == rgba.shape and torch.equal(out[..., 3:], alpha)
    assert [r.method for r in _library_call(rgba, "classical")[1].items] == ["classical", "classical"]
    grey = batch[..., :1]
    out, _, _ = node.restore(grey, "deep_learning", 28.0, 24.0, "cpu")
    assert out.shape == grey.shape


def test_bad_inputs_give_clear_errors(batch):
    node = nodes.RestoreKitHybridRestore()
    with pytest.raises(ValueError, match="channels"):
        node.restore(batch[..., :2], "auto", 28.0, 24.0, "cpu")
    with pytest.raises(ValueError, match="must not exceed"):
        node.restore(batch, "auto", 20.0, 25.0, "cpu")
    bad = batch.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nodes.RestoreKitDamageAnalysis().analyse(bad)


def test_damage_analysis_node(batch):
    out = nodes.RestoreKitDamageAnalysis().analyse(batch, 28.0, 24.0)
    assert nodes.RestoreKitDamageAnalysis.OUTPUT_NODE and "features:" in out["ui"]["text"][0]
    feats, severity, info, mask = out["result"]
    data = json.loads(feats)
    assert len(data) == 2 and len(data[0]["features"]) == 14
    assert severity.count(",") == 1
    analyses = [engine.shared_restorer(engine.Thresholds(28.0, 24.0), "auto").analyse(batch[i].numpy())
                for i in range(2)]
    assert severity == ", ".join(a.severity for a in analyses)
    assert [d["quality_db"] for d in data] == [a.quality_db for a in analyses]
    one, sev1, _, _ = nodes.RestoreKitDamageAnalysis().analyse(batch[:1], 80.0, 5.0)["result"]
    assert json.loads(one)["severity"] == "moderate" == sev1  # thresholds as configured


def test_cli_restore_and_status(tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    arr = damage.damage_image(damage.load_source("rocket", 64), "moderate", 5)[0]
    Image.fromarray((arr * 255).astype(np.uint8)).save(src / "old.png")
    (src / "junk.jpg").write_bytes(b"\x00" * 50)
    out = tmp_path / "out"
    assert cli.main(["restore", str(src), "-o", str(out), "--no-progress", "--device", "cpu"]) == 1  # one failed
    text = capsys.readouterr().out
    assert "junk.jpg: failed (cannot read 'junk.jpg'" in text and os.path.isfile(out / "old_restored.png")
    assert cli.main(["restore", str(src), "-o", str(out), "--light-min-db", "10", "--severe-max-db", "20"]) == 2
    assert cli.main(["status"]) == 0
    assert "hybrid/predictor.joblib: present, sha256 ok" in capsys.readouterr().out


# --- the damage mask as a node output and input -----------------------------------------------------------
def _scratched(h=130, w=171, seed=0):
    """A held-out test source (chelsea) of odd size with a bright 2 px scratch drawn across it, and the
    scratch's pixels."""
    import cv2

    clean = damage.load_source("chelsea", 2 * max(h, w))[:h, :w].astype(np.float32)
    layer = np.zeros((h, w), np.float32)
    cv2.line(layer, (int(0.3 * w), -5), (int(0.45 * w), h + 5), 1.0, 2, cv2.LINE_AA)
    img = clean * (1 - 0.9 * layer[..., None]) + 0.95 * 0.9 * layer[..., None]
    return clean, img.astype(np.float32), layer >= 0.5


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_damage_analysis_outputs_the_detectors_mask(channels):
    """The MASK output is hybrid.damage_mask.detect's mask per image ([B,H,W] float32 0/1) — or, by
    default, the mask Hybrid Restore inpaints — for grey, RGB and RGBA (alpha ignored), odd sizes and a
    batch of two; the drawn scratch is in it."""
    from restorekit.hybrid import damage_mask

    _, img, truth = _scratched()
    rgb = np.stack([img, img[::-1].copy()])
    x = {1: rgb[..., :1], 3: rgb, 4: np.concatenate([rgb, np.full(rgb.shape[:3] + (1,), 0.3, np.float32)], -1)}[channels]
    node = nodes.RestoreKitDamageAnalysis()
    out = node.analyse(torch.from_numpy(x), mask_mode="all detected")
    mask = out["result"][3]
    assert nodes.RestoreKitDamageAnalysis.RETURN_TYPES[3] == "MASK"
    assert mask.shape == (2, 130, 171) and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    inpainted = node.analyse(torch.from_numpy(x))["result"][3]  # default: the mask the plan inpaints
    assert inpainted.shape == mask.shape
    # ... exactly what Hybrid Restore (auto) inpaints by itself: its own mask output
    _, _, restored_mask = nodes.RestoreKitHybridRestore().restore(torch.from_numpy(x), "auto")
    np.testing.assert_array_equal(inpainted.numpy() > 0.5, restored_mask.numpy() > 0.5)
    for i in range(2):
        ref, _ = damage_mask.detect(x[i])
        np.testing.assert_array_equal(mask[i].numpy() > 0.5, ref)
        assert not (inpainted[i] > mask[i]).any()  # every candidate the gate may pick lies inside the full mask
    if channels != 1:  # grey loses the scratch's contrast against the light fur less; RGB is the claim
        assert (mask[0].numpy() > 0.5)[truth].mean() >= 0.8
    assert (mask[1].numpy() > 0.5)[truth[::-1]].mean() >= (0.8 if channels != 1 else 0.0)
    info = out["result"][2]
    assert "mask: damage mask (cnn)" in info and "line(s)" in info
    assert json.loads(out["result"][0])[0]["damage_mask"]["lines"] >= 1


def test_hybrid_restore_inpaints_a_given_mask_and_outputs_it():
    clean, img, truth = _scratched()
    x = torch.from_numpy(img)[None]
    given = torch.from_numpy(truth.astype(np.float32))[None]
    node = nodes.RestoreKitHybridRestore()
    out, info, used = node.restore(x, "classical", mask=given)
    assert used.shape == (1, 130, 171) and used.dtype == torch.float32
    np.testing.assert_array_equal(used[0].numpy() > 0.5, truth)  # the mask it inpainted is the one given
    err_before = np.abs(img - clean)[truth].mean()
    err_after = np.abs(out[0].numpy() - clean)[truth].mean()
    assert err_after < 0.35 * err_before, (err_before, err_after)  # the scratch is filled from around it
    assert "inpaint" in info and "given" in info
    # an all-black mask (Load Image's 64x64 placeholder for a picture never painted on, or full size)
    # is no mask: the result is the node's without one, and the info says so
    ref, _, ref_mask = node.restore(x, "classical")
    for empty in (torch.zeros(1, 64, 64), torch.zeros(1, 130, 171)):
        out0, info0, used0 = node.restore(x, "classical", mask=empty)
        assert torch.equal(out0, ref) and torch.equal(used0, ref_mask)
        assert "given mask is empty (all black): the detector decides" in info0


def test_given_mask_sizes_batches_and_bad_masks():
    _, img, truth = _scratched()
    x = torch.from_numpy(np.stack([img, img]))
    node = nodes.RestoreKitHybridRestore()
    # one mask for a batch of two, drawn at half size (same aspect ratio within rounding): resized
    small = torch.from_numpy(truth[::2, ::2].astype(np.float32))[None]
    out, info, used = node.restore(x, "classical", mask=small)
    assert out.shape == x.shape and used.shape == (2, 130, 171) and torch.equal(used[0], used[1])
    assert "resized from 86x65" in info
    ref = torch.nn.functional.interpolate(small[:, None], size=(130, 171), mode="nearest")[:, 0]
    assert torch.equal(used[0], ref[0])
    with pytest.raises(ValueError, match="aspect ratios differ"):
        node.restore(x, "classical", mask=torch.ones(1, 130, 130))
    with pytest.raises(ValueError, match="3 masks for 2 images"):
        node.restore(x, "classical", mask=torch.ones(3, 130, 171))
    bad = torch.zeros(1, 130, 171)
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        node.restore(x, "classical", mask=bad)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_hybrid_restore_mask_output_for_every_channel_count_and_strategy(channels):
    """The mask output has the image's batch and size for grey / RGB / RGBA; the U-Net path inpaints
    the given mask before the network, so its mask output is that mask; widgets at their min and max."""
    _, img, truth = _scratched(51, 77)
    x = torch.from_numpy(np.stack([img, img])[..., :min(channels, 3)])
    if channels == 4:
        x = torch.cat([x, torch.full(x.shape[:3] + (1,), 0.5)], -1)
    given = torch.from_numpy(truth.astype(np.float32))[None]
    node = nodes.RestoreKitHybridRestore()
    for light, severe in ((5.0, 5.0), (60.0, 60.0), (60.0, 5.0)):
        out, info, used = node.restore(x, "auto", light, severe, "cpu", mask=given)
        assert out.shape == x.shape and used.shape == (2, 51, 77)
    out, info, used = node.restore(x, "deep_learning", mask=given)  # inpaints first, then the U-Net
    assert out.shape == x.shape and torch.equal(used[0] > 0.5, given[0] > 0.5)
    assert "was not inpainted" not in info
    out, info, used = node.restore(x, "classical")
    assert used.shape == (2, 51, 77)
