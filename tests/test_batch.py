"""Batch rules (hybrid/tools/batch.py) and the restorekit CLI's options: trees, names, existing files,
own outputs, the report; format/depth/orientation round trips through the CLI."""
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from restorekit.hybrid.tools import batch, cli
from restorekit.scripts import image_io


class Invert(batch.Processor):
    outputs = ("",)
    done_label = "restored"

    def __init__(self, fail_on=None, identity_on=None):
        self.fail_on, self.identity_on, self.seen = fail_on, identity_on, []

    def __call__(self, image):
        name = os.path.basename(image.path)
        self.seen.append(name)
        if name == self.fail_on:
            raise RuntimeError("boom")
        px = image.pixels if name == self.identity_on else 1.0 - image.pixels
        return batch.Result({"": px}, {"kind": "invert"}, "inverted")


def _png(path, rng, shape=(12, 16, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path, rng):
    src = tmp_path / "in"
    _png(str(src / "a.png"), rng)
    _png(str(src / "sub" / "b.png"), rng)
    Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(src / "sub" / "c.jpg", quality=90)
    _png(str(src / "sub" / "deeper" / "d.png"), rng, (9, 9))
    _png(str(src / ".hidden.png"), rng)
    (src / "notes.txt").write_text("not an image")
    return src


def _opts(out, **kw):
    return batch.BatchOptions(output_dir=str(out), suffix="_x", **kw)


def _status(report):
    return {os.path.relpath(r["input"]): r for r in report["files"]}


def test_flat_run_lists_subfolders_and_non_images(tree, tmp_path):
    rep = batch.run_batch([str(tree)], Invert(), _opts(tmp_path / "out"), progress=False)
    rows = {os.path.basename(r["input"]): r for r in rep["files"]}
    assert rows["a.png"]["status"] == "restored"
    assert rows["sub"]["status"] == "skipped" and "--recursive" in rows["sub"]["reason"]
    assert rows["notes.txt"]["status"] == "skipped" and "not an image" in rows["notes.txt"]["reason"]
    assert ".hidden.png" not in rows
    assert rep["summary"]["counts"] == {"restored": 1, "unchanged": 0, "skipped": 2, "failed": 0}
    assert rep["summary"]["reasons"]["skipped"] == {"subfolder": 1, "not an image file": 1}
    with open(rep["report"]) as f:
        assert json.load(f)["summary"] == rep["summary"]


def test_recursive_mirrors_the_tree_and_keeps_formats(tree, tmp_path):
    out = tmp_path / "out"
    rep = batch.run_batch([str(tree)], Invert(), _opts(out, recursive=True), progress=False)
    assert rep["summary"]["counts"]["restored"] == 4
    for rel in ("a_x.png", "sub/b_x.png", "sub/c_x.jpg", "sub/deeper/d_x.png"):
        assert (out / rel).is_file(), rel
    assert Image.open(out / "sub" / "c_x.jpg").format == "JPEG"
    assert Image.open(out / "sub" / "deeper" / "d_x.png").mode == "L"  # grey stays grey
    src = np.asarray(Image.open(tree / "sub" / "b.png"), np.int64)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sub" / "b_x.png"), np.int64), 255 - src)


def test_rerun_into_the_input_folder_never_restores_its_own_outputs(tree):
    opts = _opts(tree)
    first = batch.run_batch([str(tree)], Invert(), opts, progress=False)
    assert (tree / "a_x.png").is_file()
    proc = Invert()
    second = batch.run_batch([str(tree)], proc, opts, progress=False)
    rows = {os.path.basename(r["input"]): r for r in second["files"]}
    assert rows["a_x.png"]["status"] == "skipped" and rows["a_x.png"]["category"] == "own output"
    assert proc.seen == ["a.png"]                       # a_x.png was not processed again
    assert rows["a.png"]["outputs"] == [str(tree / "a_x_1.png")]  # default: never overwrite
    assert not any("_x_x" in f for f in os.listdir(tree))
    assert second["report"] != first["report"] and os.path.isfile(first["report"])  # report kept
    # a user's own file that merely ends in the suffix (no RestoreKit metadata) is an input
    Image.open(tree / "a.png").save(tree / "holiday_x.png")
    third = batch.run_batch([str(tree)], Invert(), _opts(tree, existing="skip"), progress=False)
    rows = {os.path.basename(r["input"]): r for r in third["files"]}
    assert rows["holiday_x.png"]["status"] == "restored"
    assert rows["a.png"]["status"] == "skipped" and "output exists" in rows["a.png"]["reason"]


def test_skip_existing_and_overwrite(tree, tmp_path):
    out = tmp_path / "out"
    batch.run_batch([str(tree / "a.png")], Invert(), _opts(out), progress=False)
    (out / "a_x.png").write_bytes(b"old")
    proc = Invert()
    rep = batch.run_batch([str(tree / "a.png")], proc, _opts(out, existing="skip"), progress=False)
    assert proc.seen == [] and rep["summary"]["counts"]["skipped"] == 1
    assert (out / "a_x.png").read_bytes() == b"old"
    rep = batch.run_batch([str(tree / "a.png")], Invert(), _opts(out, existing="overwrite"), progress=False)
    assert rep["files"][0]["outputs"] == [str(out / "a_x.png")]
    assert Image.open(out / "a_x.png").size == (16, 12)
    assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == ["a_x.png"]


def test_explicit_file_is_tried_even_when_it_is_an_output(tree, tmp_path):
    batch.run_batch([str(tree / "a.png")], Invert(), _opts(tree), progress=False)
    proc = Invert()
    rep = batch.run_batch([str(tree / "a_x.png")], proc, _opts(tmp_path / "o"), progress=False)
    assert proc.seen == ["a_x.png"] and rep["summary"]["counts"]["restored"] == 1


def test_same_stem_two_formats_never_share_an_output(tmp_path, rng):
    src = tmp_path / "in"
    _png(str(src / "x.png"), rng)
    Image.open(src / "x.png").save(src / "x.jpg")
    rep = batch.run_batch([str(src)], Invert(), _opts(tmp_path / "o", format="png", existing="overwrite"),
                          progress=False)
    outs = sorted(os.path.basename(r["outputs"][0]) for r in rep["files"])
    assert outs == ["x_x.png", "x_x_1.png"]


def test_failures_and_unchanged_are_reported_and_the_batch_goes_on(tree, tmp_path):
    (tree / "broken.png").write_bytes(os.urandom(100))
    _png(str(tree / "same.png"), np.random.default_rng(5))
    rep = batch.run_batch([str(tree)], Invert(fail_on="a.png", identity_on="same.png"), _opts(tmp_path / "o"),
                          progress=False)
    rows = {os.path.basename(r["input"]): r for r in rep["files"]}
    assert rows["a.png"]["status"] == "failed" and "boom" in rows["a.png"]["reason"]
    assert rows["broken.png"]["status"] == "failed" and rows["broken.png"]["category"] == "unreadable image"
    assert rows["same.png"]["status"] == "unchanged" and rows["same.png"]["outputs"]
    c = rep["summary"]["counts"]
    assert (c["failed"], c["unchanged"], c["restored"]) == (2, 1, 0)
    text = batch.format_summary(rep["summary"])
    assert "failed" in text and "unreadable image (1)" in text and "RuntimeError while processing (1)" in text


def test_output_that_is_a_file_is_refused(tree, capsys):
    assert cli.main(["restore", str(tree), "-o", str(tree / "a.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is an existing file" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="existing file"):
        batch.check_output_dir(str(tree / "a.png"))


@pytest.mark.parametrize("argv, needle", [
    (["--tile", "7"], "out of range"), (["--tile", "-5"], "out of range"), (["--tile", "x"], "not an integer"),
    (["--quality", "0"], "1..100"), (["--light-min-db", "nan"], "finite"),
])
def test_numeric_options_are_validated(argv, needle, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["restore", str(tmp_path), "-o", str(tmp_path / "o")] + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    if "--tile" in argv and needle == "out of range":
        assert "0 (planned from free memory)" in err and "64" in err


def test_tile_rule_matches_the_runner():
    from restorekit.scripts.inference import planning

    assert cli.TILE_MIN == planning.MIN_TILE
    assert cli._tile("0") == 0 and cli._tile("64") == 64


def test_version_and_help(capsys):
    from restorekit import __version__

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"restorekit {__version__}"
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    out = capsys.readouterr().out
    assert "deep_learning: inpainting" in " ".join(out.split()) and "--skip-existing" in out and "--recursive" in out


def test_device_gpu_without_gpu_says_it_fell_back(capsys):
    from restorekit.scripts.inference.memory_utils import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    note = cli._device_note("gpu")
    assert "none available" in note
    assert "falling back to the CPU" in capsys.readouterr().err


def test_evaluate_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "results.csv").write_text("earlier report")
    assert cli.main(["evaluate", "-o", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_text() == "earlier report"


# --- round trips through the CLI -------------------------------------------------------------------
def test_cli_keeps_16_bit_grey_and_orientation(tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    g = rng.integers(0, 65536, (40, 48), dtype=np.uint16)
    cv2.imwrite(str(src / "scan.png"), g)
    im = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[274] = 6  # rotate 90° clockwise to display
    im.save(src / "portrait.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    # a node that passes pixels through: every bit must survive the CLI's read and write
    assert cli.main(["run", "RestoreKitLoadImage16", str(src), "-o", str(out), "--no-progress"]) == 0
    back = cv2.imread(str(out / "scan_loadimage16.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2
    np.testing.assert_array_equal(back, g)
    turned = Image.open(out / "portrait_loadimage16.jpg")
    assert turned.size == (30, 50) and turned.getexif().get(274, 1) == 1  # upright, tag reset
    # the hybrid restorer keeps depth, greyscale and format too
    assert cli.main(["restore", str(src), "-o", str(out), "--strategy", "classical", "--no-progress"]) == 0
    restored = Image.open(out / "scan_restored.png")
    assert restored.mode.startswith("I;16")
    assert Image.open(out / "portrait_restored.jpg").size == (30, 50)
    # and --format / --bit-depth choose otherwise
    assert cli.main(["restore", str(src / "scan.png"), "-o", str(out), "--strategy", "classical", "--format", "tif",
                     "--bit-depth", "8", "--no-progress"]) == 0
    t = image_io.read_image(str(out / "scan_restored.tif"))
    assert t.meta.bit_depth == 8 and t.meta.grey


def test_restore_cli_shows_progress_within_an_image(tmp_path, rng, monkeypatch):
    """The U-Net runs with the runner's per-tile progress when the CLI shows progress."""
    from restorekit.hybrid import unet

    seen = []
    real = unet.run

    def spy(handle, image, device="auto", tile=0, progress=False):
        seen.append((progress, tile))
        return real(handle, image, device=device, tile=tile, progress=progress)

    monkeypatch.setattr(unet, "run", spy)
    _png(str(tmp_path / "in" / "p.png"), rng, (70, 90, 3))
    assert cli.main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--strategy", "deep_learning",
                     "--tile", "64", "--device", "cpu"]) == 0
    assert seen == [(True, 64)]
    seen.clear()
    assert cli.main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--strategy", "deep_learning",
                     "--no-progress"]) == 0
    assert seen == [(False, 0)]
