"""Load Image (16-bit/float) and Save Image (16-bit/float) (nodes/io.py): depth, greyscale, metadata,
alpha and float formats survive a load -> save round trip; names and folders as ComfyUI's SaveImage."""
import json
import os

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from restorekit.nodes import io as io_nodes
from restorekit.nodes.comfy_adapter import install
from restorekit.scripts import image_io


@pytest.fixture
def folders(tmp_path):
    rt = install()
    old = dict(rt._image_dirs)
    for kind in ("input", "output", "temp"):
        (tmp_path / kind).mkdir()
        rt.set_image_folder(kind, str(tmp_path / kind))
    yield tmp_path
    rt._image_dirs.clear()
    rt._image_dirs.update(old)


def _load(name):
    return io_nodes.RestoreKitLoadImage16().load(name)


def _save(images, **kw):
    return io_nodes.RestoreKitSaveImage16().save(images, **kw)


def test_16_bit_grey_png_keeps_all_16_bits(folders, rng):
    g = rng.integers(0, 65536, (37, 53), dtype=np.uint16)
    g[0, :4] = (0, 1, 65534, 65535)
    cv2.imwrite(str(folders / "input" / "scan.png"), g)
    assert "scan.png" in io_nodes.RestoreKitLoadImage16.INPUT_TYPES()["required"]["image"][0]
    image, mask, meta, info = _load("scan.png")
    assert image.shape == (1, 37, 53, 3) and image.dtype.is_floating_point
    assert (meta.format, meta.bit_depth, meta.grey) == ("PNG", 16, True) and mask.shape == (1, 64, 64)
    # core LoadImage would give all white here; ours has every level
    np.testing.assert_array_equal(np.round(image[0, ..., 0].numpy() * 65535).astype(np.uint16), g)
    res = _save(image, filename_prefix="scans/kept", format="png", bit_depth="16", metadata=meta)
    saved = res["ui"]["images"][0]
    assert saved["subfolder"] == "scans" and saved["type"] == "output"
    path = folders / "output" / "scans" / saved["filename"]
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2  # 16-bit and grey again
    np.testing.assert_array_equal(back, g)
    assert "PNG 16-bit grey" in res["result"][0]


def test_icc_and_metadata_survive_and_files_are_numbered(folders, rng):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x013B] = "A. Photographer"  # Artist
    im.save(folders / "input" / "p.jpg", icc_profile=icc, exif=exif, quality=95)
    image, _mask, meta, _info = _load("p.jpg")
    for fmt, depth in (("tiff", "16"), ("png", "8"), ("jpeg", "8")):
        res = _save(image, filename_prefix="meta", format=fmt, bit_depth=depth, metadata=meta,
                    prompt={"1": {"class_type": "X", "inputs": {}}}, extra_pnginfo={"workflow": {"nodes": []}})
        name = res["ui"]["images"][0]["filename"]
        path = folders / "output" / name if fmt != "tiff" else None
        if fmt == "tiff":  # not browser-viewable: an 8-bit preview goes to temp
            assert res["ui"]["images"][0]["type"] == "temp"
            path = sorted((folders / "output").glob("meta_*_.tif"))[-1]
        back = image_io.read_image(str(path))
        assert back.meta.icc_profile == icc, fmt
        if fmt == "tiff":
            assert tifffile.TiffFile(path).pages[0].dtype == np.uint16
        if fmt == "png":  # the workflow rides along, as with core SaveImage
            text = Image.open(path).text
            assert json.loads(text["prompt"])["1"]["class_type"] == "X" and "workflow" in text
        if fmt == "jpeg":
            assert Image.open(path).getexif().get(0x013B) == "A. Photographer"
    names = sorted(f for f in os.listdir(folders / "output") if f.startswith("meta_"))
    assert names == ["meta_00001_.tif", "meta_00002_.png", "meta_00003_.jpg"]


def test_float_and_exr_and_alpha(folders, rng):
    pytest.importorskip("OpenEXR")
    a = rng.random((16, 24, 3), dtype=np.float32)
    tifffile.imwrite(folders / "input" / "f.tif", a, photometric="rgb")
    image, _m, meta, info = _load("f.tif")
    assert meta.bit_depth == 32 and meta.float_samples
    np.testing.assert_array_equal(image[0].numpy(), a)
    res = _save(image, filename_prefix="f", format="tiff", bit_depth="32 (float)", metadata=meta)
    out = tifffile.imread(sorted((folders / "output").glob("f_*_.tif"))[-1])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a)
    res = _save(image, filename_prefix="e", format="exr", bit_depth="32 (float)")
    assert "EXR 32-bit float" in res["result"][0]
    back = image_io.read_image(str(sorted((folders / "output").glob("e_*_.exr"))[-1]))
    np.testing.assert_allclose(back.pixels, a, atol=1e-5)
    # alpha: load gives the mask (1 - alpha); save writes it back as alpha
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folders / "input" / "a.png")
    image, mask, meta, _ = _load("a.png")
    np.testing.assert_allclose(mask[0].numpy(), 1 - rgba[..., 3] / 255.0, atol=1e-6)
    _save(image, filename_prefix="alpha", format="png", bit_depth="8", metadata=meta, mask=mask)
    back = np.asarray(Image.open(sorted((folders / "output").glob("alpha_*_.png"))[-1]))
    np.testing.assert_array_equal(back, rgba)


def test_load_validation_and_change_detection(folders, rng):
    cv2.imwrite(str(folders / "input" / "x.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    cls = io_nodes.RestoreKitLoadImage16
    assert cls.VALIDATE_INPUTS("x.png") is True
    assert "Invalid image file" in cls.VALIDATE_INPUTS("missing.png")
    assert "outside" in cls.VALIDATE_INPUTS("../../etc/passwd")
    h1 = cls.IS_CHANGED("x.png")
    cv2.imwrite(str(folders / "input" / "x.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert cls.IS_CHANGED("x.png") != h1
    with pytest.raises(ValueError, match="format must be"):
        _save(_load("x.png")[0], format="gif")


def test_save_prefix_cannot_leave_the_output_folder(folders, rng):
    import torch

    x = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="leaves the output folder"):
        _save(torch.from_numpy(x), filename_prefix="../escape")
    res = _save(torch.from_numpy(x), filename_prefix="sub/dir/name")
    assert res["ui"]["images"][0]["subfolder"] == os.path.join("sub", "dir")
