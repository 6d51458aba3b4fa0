"""The Python API (api.py, exported lazily from the package root): dtypes and ranges, files, nodes,
workflows; `import restorekit` imports neither torch nor the nodes; ComfyUI's loader still finds them."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

import restorekit
from restorekit.hybrid.tools import damage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(tmp_path, code: str) -> dict:
    """Run ``code`` in a fresh interpreter where ``import restorekit`` is this repository; its last
    stdout line is JSON."""
    link = tmp_path / "site" / "restorekit"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        os.symlink(REPO, link)
    env = dict(os.environ, PYTHONPATH=str(link.parent))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_restorekit_imports_no_torch(tmp_path):
    res = _python(tmp_path, """
        import json, sys, time
        t = time.perf_counter()
        import restorekit
        t_import = time.perf_counter() - t
        after_import = sorted(m for m in ("torch", "cv2", "restorekit.nodes") if m in sys.modules)
        from restorekit import HybridRestorer, analyse, restore, restore_file, read_image, write_image
        after_api = sorted(m for m in ("torch", "restorekit.nodes") if m in sys.modules)
        print(json.dumps({"after_import": after_import, "after_api": after_api, "seconds": t_import,
                          "version": restorekit.__version__, "all": restorekit.__all__}))
    """)
    assert res["after_import"] == [] and res["after_api"] == []
    assert res["version"] == restorekit.__version__
    assert {"restore", "restore_file", "run_node", "NODE_CLASS_MAPPINGS"} <= set(res["all"])


def test_comfyui_loader_sequence_finds_every_node(tmp_path):
    """What ComfyUI 0.3.64's load_custom_node does: exec the folder's __init__ under a path-like module
    name, then hasattr/getattr NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS and WEB_DIRECTORY."""
    res = _python(tmp_path, f"""
        import importlib.util, json, os, sys
        path = {REPO!r}
        name = path.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        torch_before = "torch" in sys.modules
        ok = hasattr(module, "NODE_CLASS_MAPPINGS") and getattr(module, "NODE_CLASS_MAPPINGS") is not None
        names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS")
        print(json.dumps({{"ok": ok, "nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": len(names),
                          "web": hasattr(module, "WEB_DIRECTORY"), "torch_before": torch_before,
                          "errors": module.NODE_IMPORT_ERRORS}}))
    """)
    assert res["ok"] and not res["web"] and not res["torch_before"] and res["errors"] == {}
    assert res["nodes"] == sorted(restorekit.NODE_CLASS_MAPPINGS) and res["names"] == len(res["nodes"])
    assert {"RestoreKitLoadImage16", "RestoreKitSaveImage16"} <= set(res["nodes"])
    with pytest.raises(AttributeError):
        restorekit.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def photo():
    clean = damage.load_source("chelsea", 64)[:48, :64]
    return damage.damage_image(clean, "moderate", 4)[0].astype(np.float32)


def test_uint8_and_uint16_arrays_are_scaled_not_clipped(photo):
    ref, info = restorekit.restore(photo, "classical")
    u8 = np.round(photo * 255).astype(np.uint8)
    out8, info8 = restorekit.restore(u8, "classical")
    assert out8.dtype == np.uint8 and out8.shape == u8.shape
    assert out8.mean() < 250 and abs(float(out8.mean()) - float(ref.mean()) * 255) < 3  # not all white
    ref8, _ = restorekit.restore(u8.astype(np.float32) / 255, "classical")
    assert np.abs(out8.astype(int) - np.round(ref8 * 255).astype(int)).max() <= 1
    u16 = np.round(photo * 65535).astype(np.uint16)
    out16, _ = restorekit.restore(u16, "classical")
    ref16, _ = restorekit.restore(u16.astype(np.float32) / 65535, "classical")
    assert out16.dtype == np.uint16
    assert np.abs(out16.astype(int) - np.round(ref16 * 65535).astype(int)).max() <= 1
    grey, _ = restorekit.restore(u8[..., 0], "classical")
    assert grey.shape == u8.shape[:2] and grey.dtype == np.uint8
    with pytest.raises(ValueError, match=f"maximum is {int(u8.max())}"):
        restorekit.restore(u8.astype(np.float32), "classical")
    a = restorekit.analyse(u8, estimator="forest")
    assert a["severity"] in ("light", "moderate", "severe") and len(a["features"]) == 14


def test_restore_file_keeps_depth_and_never_overwrites(tmp_path, photo):
    src = tmp_path / "scan.tif"
    tifffile.imwrite(src, np.round(photo * 65535).astype(np.uint16), photometric="rgb")
    row = restorekit.restore_file(str(src), strategy="classical")
    assert row["status"] == "restored" and row["outputs"] == [str(tmp_path / "scan_restored.tif")]
    assert tifffile.imread(row["outputs"][0]).dtype == np.uint16
    row2 = restorekit.restore_file(str(src), strategy="classical")
    assert row2["outputs"] == [str(tmp_path / "scan_restored_1.tif")]
    target = tmp_path / "named.png"
    row3 = restorekit.restore_file(str(src), str(target), strategy="classical")
    assert row3["outputs"] == [str(target)]
    with pytest.raises(FileExistsError):
        restorekit.restore_file(str(src), str(target), strategy="classical")
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert restorekit.restore_file(str(tmp_path / "bad.png"), str(tmp_path / "o"))["status"] == "failed"
    rep = restorekit.restore_folder([str(src)], str(tmp_path / "folder"), strategy="classical")
    assert rep["summary"]["counts"]["restored"] == 1 and os.path.isfile(rep["report"])


def test_run_node_and_workflow_from_python(photo):
    u8 = np.round(photo * 255).astype(np.uint8)
    out = restorekit.run_node("LBCLAHE", u8, clip_limit=2.0, grid=4)
    assert out["image"].dtype == np.uint8 and out["image"].shape == u8.shape
    assert "clip limit (OpenCV): 2" in out["info"]
    with pytest.raises(ValueError, match="above max"):
        restorekit.run_node("LBCLAHE", u8, clip_limit=99.0)
    psf = restorekit.run_node("RestoreKitPSF")
    assert psf["image"].ndim == 3 and "FWHM" in psf["info"]
    assert "RestoreKitSmartSharpen" in restorekit.list_nodes()
    res = restorekit.run_workflow(os.path.join(REPO, "examples", "api", "sharpen.json"), u8,
                                  settings={"2.amount": 1.0})
    (name, img), = res.items()
    assert img.dtype == np.uint8 and img.shape == u8.shape and not np.array_equal(img, u8)
