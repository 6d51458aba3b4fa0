"""What `restorekit restore` tells the user per file (issue 15 §4): the stages that ran with their
parameters, or "unchanged" and why — on the console line and in restore_report.json; greyscale files
stay greyscale; uint8 arrays are scaled; --strategy is explained; a progress bar over a large image's
stages."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from restorekit.hybrid import engine
from restorekit.hybrid.tools import batch, cli, damage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clean():
    return damage.load_source("astronaut", 160).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, clean):
    """clean.png (nothing to do), noisy.png (white noise σ 0.04: denoise), grey.png (8-bit greyscale)."""
    d = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(5)
    noisy = np.clip(clean + rng.normal(0, 0.04, clean.shape), 0, 1)
    Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(d / "clean.png")
    Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(d / "noisy.png")
    Image.fromarray(np.round(noisy.mean(-1) * 255).astype(np.uint8), "L").save(d / "grey.png")
    return d


def _restorer():
    # the plan with the fast DFT-Wiener denoiser (BM3D costs seconds even on small images)
    return engine.HybridRestorer(thresholds=engine.Thresholds(), device="cpu", denoiser="wiener")


def _run(folder, out, capsys, **kw):
    report = batch.run_batch([str(folder)], batch.RestoreProcessor(_restorer(), "classical", **kw),
                             batch.BatchOptions(output_dir=str(out)), progress=False, on_row=cli._print_row)
    lines = {os.path.basename(line.split(" ", 1)[0]): line for line in capsys.readouterr().out.splitlines()}
    rows = {os.path.basename(r["input"]): r for r in report["files"]}
    with open(report["report"], encoding="utf-8") as f:
        assert json.load(f)["files"] == json.loads(json.dumps(report["files"], default=str))
    return rows, lines


def test_each_file_says_which_stages_ran_with_which_parameters_or_unchanged_and_why(folder, tmp_path, capsys):
    rows, lines = _run(folder, tmp_path / "out", capsys)
    noisy = rows["noisy.png"]
    assert noisy["status"] == "restored" and noisy["stages"] == ["denoise"]
    step = noisy["steps"][0]
    assert step["stage"] == "denoise" and step["params"]["sigma"] == pytest.approx(0.04, rel=0.25)
    assert step["why"].startswith("noise σ") and step["result"]["backend"] and step["seconds"] >= 0
    assert {s["stage"] for s in noisy["skipped"]} == {"inpaint", "deblur", "tone", "colour", "sharpen"}
    assert "denoise(sigma=0.0" in lines["noisy.png"] and "backend=" in lines["noisy.png"]
    assert "array[" not in lines["noisy.png"]  # arrays stay out of the console line
    c = rows["clean.png"]
    assert c["status"] == "unchanged" and c["steps"] == [] and len(c["skipped"]) == 6
    assert c["reason"].startswith("no defect above its threshold:") and "denoise: noise σ" in c["reason"]
    assert c["category"] == "no defect above its threshold"  # the summary groups by the headline
    assert "unchanged: no defect above its threshold" in lines["clean.png"]
    with Image.open(c["outputs"][0]) as a, Image.open(folder / "clean.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # unchanged means bit-identical


def test_greyscale_files_stay_greyscale(folder, tmp_path, capsys):
    rows, _ = _run(folder, tmp_path / "out", capsys)
    g = rows["grey.png"]
    assert g["status"] == "restored" and "denoise" in g["stages"]
    assert not any(s["stage"] == "colour" and "cast" in s["why"] for s in g["skipped"])
    with Image.open(g["outputs"][0]) as im:
        assert im.mode == "L"


def test_uint8_arrays_are_scaled_and_returned_as_uint8(clean):
    rng = np.random.default_rng(6)
    noisy = np.clip(clean + rng.normal(0, 0.04, clean.shape), 0, 1).astype(np.float32)
    u8 = np.round(noisy * 255).astype(np.uint8)
    r = _restorer()
    out8, rep8 = r.restore(u8, "classical")
    ref, rep = r.restore(u8.astype(np.float32) / 255, "classical")
    assert out8.dtype == np.uint8 and rep8.stages == rep.stages == ["denoise"]
    assert np.abs(out8.astype(int) - np.round(ref * 255).astype(int)).max() <= 1  # not clipped to white


def test_strategy_help_names_every_strategy(capsys):
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    block = text[text.index("--strategy"):]
    for name in engine.STRATEGIES:
        assert f"{name}:" in block or f"{name} (default):" in block, name


def test_progress_over_the_stages_of_a_large_image(folder, monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __call__(self, done, total, stage):
            seen.append((self.name, done, total, stage))

        def close(self):
            seen.append((self.name, "closed"))

    monkeypatch.setattr(batch, "_StageBar", Recorder)
    data = damage.load_source("astronaut", 160)
    rng = np.random.default_rng(7)
    from restorekit.scripts import image_io

    img = image_io.ImageData(np.clip(data + rng.normal(0, 0.04, data.shape), 0, 1).astype(np.float32),
                             image_io.ImageMeta(), "big.png")
    monkeypatch.setattr(batch, "STAGE_PROGRESS_MIN_PIXELS", 160 * 160)
    batch.RestoreProcessor(_restorer(), "classical", progress=True)(img)
    assert seen == [("big.png", 0, 1, "denoise"), ("big.png", 1, 1, "done"), ("big.png", "closed")]
    seen.clear()
    batch.RestoreProcessor(_restorer(), "classical", progress=False)(img)  # --no-progress
    monkeypatch.setattr(batch, "STAGE_PROGRESS_MIN_PIXELS", 160 * 160 + 1)
    batch.RestoreProcessor(_restorer(), "classical", progress=True)(img)  # small: no bar
    assert seen == []


def test_readme_before_after_block_matches_the_docs_folder():
    """The README's main-job block (written by docs/make_before_after.py) shows exactly the
    docs/before_after_*.jpg files that exist, each small, and lists every sample image."""
    import re

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme[readme.index("<!-- before-after:start -->"):readme.index("<!-- before-after:end -->")]
    shown = set(re.findall(r"\(docs/(before_after_[A-Za-z0-9_]+\.jpg)\)", block))
    docs = {f for f in os.listdir(os.path.join(repo, "docs")) if f.startswith("before_after_")}
    assert shown and shown == docs
    assert all(os.path.getsize(os.path.join(repo, "docs", f)) < 40_000 for f in docs)
    images = os.path.join(repo, "examples", "images")
    for name in os.listdir(images):
        if name.endswith(".png"):
            assert f"`{name}`" in block, name
