"""scripts/image_io.py: orientation, bit depth, greyscale, metadata, float formats, numpy intake.

References: Pillow's own ``ImageOps.exif_transpose`` for orientation, OpenCV / tifffile / Pillow read
the written files back independently of our reader.
"""
import os
import struct

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from restorekit.scripts import image_io as io


@pytest.fixture
def rgb8(rng):
    return rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, rgb8, orientation):
    im = Image.fromarray(rgb8)
    exif = im.getexif()
    exif[274] = orientation
    p = tmp_path / "o.png"
    im.save(p, exif=exif)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)))
    data = io.read_image(str(p))
    assert data.meta.orientation == orientation
    np.testing.assert_array_equal(np.round(data.pixels * 255).astype(np.uint8), ref)
    # written back upright, with orientation 1 in the carried EXIF
    out = io.write_image(str(tmp_path / "w.jpg"), data.pixels, data.meta).path
    assert Image.open(out).getexif().get(274, 1) == 1
    assert Image.open(out).size == (ref.shape[1], ref.shape[0])


def test_tiff_orientation_tag(tmp_path, rgb8):
    tifffile.imwrite(tmp_path / "o.tif", rgb8, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    data = io.read_image(str(tmp_path / "o.tif"))
    np.testing.assert_array_equal(np.round(data.pixels * 255).astype(np.uint8), np.rot90(rgb8, -1))


def test_png16_grey_round_trip_is_bit_exact(tmp_path, rng):
    g = rng.integers(0, 65536, (33, 47), dtype=np.uint16)
    g[0, :3] = (0, 1, 65535)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    data = io.read_image(str(tmp_path / "g.png"))
    assert data.pixels.shape == (33, 47, 1) and data.meta.bit_depth == 16 and data.meta.grey
    res = io.write_image(str(tmp_path / "o.png"), data.pixels, data.meta)
    assert res.bit_depth == 16 and res.grey
    back = cv2.imread(res.path, cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2
    np.testing.assert_array_equal(back, g)
    assert Image.open(res.path).mode.startswith("I;16")


@pytest.mark.parametrize("channels", [3, 4])
def test_png16_colour_round_trip(tmp_path, rng, channels):
    a = rng.integers(0, 65536, (21, 35, channels), dtype=np.uint16)
    bgr = a[..., [2, 1, 0]] if channels == 3 else a[..., [2, 1, 0, 3]]
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    data = io.read_image(str(tmp_path / "c.png"))
    assert data.meta.bit_depth == 16 and data.meta.alpha == (channels == 4)
    np.testing.assert_array_equal(np.round(data.pixels * 65535).astype(np.uint16), a)
    res = io.write_image(str(tmp_path / "o.png"), data.pixels, data.meta)
    back = cv2.imread(res.path, cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, bgr)


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (20, 30)), (np.uint16, (20, 30)), (np.uint16, (20, 30, 3)),
                                          (np.float32, (20, 30, 3)), (np.uint8, (20, 30, 4))])
def test_tiff_round_trips_keep_depth_and_greyscale(tmp_path, rng, dtype, shape):
    if dtype == np.float32:
        a = rng.random(shape, dtype=np.float32)
    else:
        a = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    kw = {"extrasamples": ("unassalpha",)} if shape[-1] == 4 else {}
    tifffile.imwrite(tmp_path / "in.tif", a, photometric="minisblack" if len(shape) == 2 else "rgb", **kw)
    data = io.read_image(str(tmp_path / "in.tif"))
    assert data.meta.grey == (len(shape) == 2) and data.meta.float_samples == (dtype == np.float32)
    res = io.write_image(str(tmp_path / "out.tif"), data.pixels, data.meta)
    back = tifffile.imread(res.path)
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_grey_source_written_as_grey_when_channels_agree(tmp_path, rng):
    g = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    data = io.read_image(str(tmp_path / "g.png"))
    rgb = np.repeat(data.pixels, 3, -1)  # a node that returned RGB with equal channels
    assert io.write_image(str(tmp_path / "a.png"), rgb, data.meta).grey
    assert Image.open(tmp_path / "a.png").mode == "L"
    coloured = rgb.copy()
    coloured[..., 0] = np.clip(coloured[..., 0] + 0.2, 0, 1)
    res = io.write_image(str(tmp_path / "b.png"), coloured, data.meta)
    assert not res.grey and any("has colour" in n for n in res.notes)


def test_metadata_carried_png_jpeg_webp_tiff(tmp_path, rgb8):
    icc = _srgb_icc()
    im = Image.fromarray(rgb8)
    exif = im.getexif()
    exif[0x010F] = "ScanCo"          # Make
    exif[0x0132] = "2024:01:02 03:04:05"  # DateTime
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Title", "Grandma 1952")
    info.add_itxt("Comment", "née Müller")
    im.save(tmp_path / "m.png", icc_profile=icc, exif=exif, dpi=(600, 600), pnginfo=info)
    data = io.read_image(str(tmp_path / "m.png"))
    assert data.meta.icc_profile == icc and data.meta.text["Title"] == "Grandma 1952"
    assert data.meta.dpi and abs(data.meta.dpi[0] - 600) < 1
    for ext in ("png", "jpg", "webp", "tif"):
        out = io.write_image(str(tmp_path / f"o.{ext}"), data.pixels, data.meta).path
        assert io.read_software(out).startswith("RestoreKit"), ext
        back = io.read_image(out)
        assert back.meta.icc_profile == icc, ext
        if ext in ("png", "jpg", "webp"):
            e = Image.open(out).getexif()
            assert e.get(0x010F) == "ScanCo", ext
        if ext in ("png", "jpg", "tif"):
            assert back.meta.dpi and abs(back.meta.dpi[0] - 600) < 1, ext
    png = Image.open(tmp_path / "o.png")
    assert png.text["Title"] == "Grandma 1952" and png.text["Comment"] == "née Müller"


def test_jpeg_quality_and_alpha_note(tmp_path, rng):
    smooth = cv2.GaussianBlur(rng.random((64, 64, 3)).astype(np.float32), (0, 0), 3)
    rgba = np.concatenate([smooth, np.full((64, 64, 1), 0.5, np.float32)], -1)
    hi = io.write_image(str(tmp_path / "hi.jpg"), rgba, quality=95)
    lo = io.write_image(str(tmp_path / "lo.jpg"), rgba, quality=20)
    assert any("alpha channel dropped" in n for n in hi.notes)
    assert os.path.getsize(lo.path) < os.path.getsize(hi.path)
    err = lambda p: np.abs(io.read_image(p).pixels - smooth).mean()  # noqa: E731
    assert err(hi.path) < err(lo.path)
    with pytest.raises(ValueError, match="quality"):
        io.write_image(str(tmp_path / "x.jpg"), smooth, quality=0)


def test_depth_the_format_cannot_hold_is_said(tmp_path, rng):
    res = io.write_image(str(tmp_path / "x.jpg"), rng.random((8, 8, 3)), bit_depth=16)
    assert res.bit_depth == 8 and any("cannot store 16-bit" in n for n in res.notes)


def test_exr_round_trip_is_linear_light(tmp_path, rng):
    OpenEXR = pytest.importorskip("OpenEXR")
    px = rng.random((12, 18, 3), dtype=np.float32)
    res = io.write_image(str(tmp_path / "x.exr"), px, io.ImageMeta(bit_depth=32, float_samples=True))
    stored = OpenEXR.File(res.path).channels()
    from restorekit.scripts.colour import srgb_to_linear

    r = stored["RGB"].pixels[..., 0] if "RGB" in stored else stored["R"].pixels
    np.testing.assert_allclose(r, srgb_to_linear(px[..., 0]), atol=1e-6)  # linear in the file
    back = io.read_image(res.path)
    assert back.meta.float_samples and back.meta.bit_depth == 32
    np.testing.assert_allclose(back.pixels, px, atol=1e-5)
    half = io.write_image(str(tmp_path / "h.exr"), px, back.meta, bit_depth=16)
    assert io.read_image(half.path).meta.bit_depth == 16


def test_float_tiff_out_of_range_is_clipped_with_a_note(tmp_path):
    a = np.linspace(-0.5, 1.5, 40, dtype=np.float32).reshape(4, 10)
    tifffile.imwrite(tmp_path / "f.tif", a)
    data = io.read_image(str(tmp_path / "f.tif"))
    assert data.pixels.min() == 0.0 and data.pixels.max() == 1.0
    assert any("clipped" in n for n in data.meta.notes)


def test_lzw_tiff_without_imagecodecs(tmp_path, rgb8):
    """tifffile needs imagecodecs for LZW: 8-bit files still read (Pillow), 16-bit colour is refused
    with a message naming the package (never read at 8 bits silently)."""
    Image.fromarray(rgb8).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    data = io.read_image(str(tmp_path / "lzw.tif"))
    np.testing.assert_array_equal(np.round(data.pixels * 255).astype(np.uint8), rgb8)
    try:
        import imagecodecs  # noqa: F401
        pytest.skip("imagecodecs installed: tifffile reads LZW itself")
    except ImportError:
        pass
    a16 = (rgb8.astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "c16.tif", a16, photometric="rgb")
    raw = bytearray((tmp_path / "c16.tif").read_bytes())
    # mark the strips as LZW-compressed (tag 259 = 5): the file is now one tifffile cannot decode here
    with tifffile.TiffFile(tmp_path / "c16.tif") as t:
        off = t.pages[0].tags["Compression"].valueoffset
    raw[off:off + 2] = struct.pack("<H", 5)
    (tmp_path / "c16.tif").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="imagecodecs"):
        io.read_image(str(tmp_path / "c16.tif"))


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(os.urandom(200))
    with pytest.raises(ValueError, match="junk.png"):
        io.read_image(str(tmp_path / "junk.png"))
    with pytest.raises(ValueError, match="no such file"):
        io.read_image(str(tmp_path / "missing.png"))


def test_to_float01_scales_by_dtype_and_refuses_ambiguity():
    u8 = np.array([[0, 128, 255]], np.uint8)
    u16 = np.array([[0, 32768, 65535]], np.uint16)
    f, kind, _ = io.to_float01(u8)
    assert kind == "uint8" and f.dtype == np.float32 and f.max() == 1.0 and abs(f[0, 1] - 128 / 255) < 1e-7
    f, kind, _ = io.to_float01(u16)
    assert kind == "uint16" and f.max() == 1.0
    f, kind, notes = io.to_float01(np.array([[-0.1, 0.5, 1.2]]))
    assert kind == "float" and f.min() == 0 and f.max() == 1 and "clipped" in notes[0]
    for bad, msg in ((np.array([[0.0, 255.0]]), "maximum is 255"), (np.array([[1, 2]], np.int64), "int64"),
                     (np.array([[np.nan]]), "NaN"), (np.array([[True]]), "bool")):
        with pytest.raises(ValueError, match=msg):
            io.to_float01(bad)
    np.testing.assert_array_equal(io.from_float01(io.to_float01(u16)[0], "uint16"), u16)
    np.testing.assert_array_equal(io.from_float01(io.to_float01(u8)[0], "uint8"), u8)


def test_write_never_replaces_when_told_and_leaves_no_temp_files(tmp_path, rng):
    p = tmp_path / "x.png"
    p.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        io.write_image(str(p), rng.random((4, 4, 3)), overwrite=False)
    assert p.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    io.write_image(str(p), rng.random((4, 4, 3)), overwrite=True)
    assert p.read_bytes() != b"keep me" and oct(os.stat(p).st_mode & 0o777) != oct(0o600)
