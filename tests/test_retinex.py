"""Multi-scale Retinex: blurs against scipy, MSR/MSRCR/MSRCP against an independent formula-level
implementation, the IPOL properties (constant -> 0, 1 % saturation), bad input and the node."""
import math

import numpy as np
import pytest
import torch

from restorekit.scripts import retinex

DATA_EPS = 1.0 / 255.0


def _retinex(*args, **kwargs):
    """The Retinex image alone (retinex.retinex returns (image, report))."""
    return retinex.retinex(*args, **kwargs)[0]


def _astronaut(side=160):
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _camera(h=192, w=256):
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.camera(), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


# --- blurs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [2.0, 15.0])
def test_exact_blur_is_scipy_reflect_gaussian(sigma):
    from scipy.ndimage import gaussian_filter

    img = _camera(64, 96).astype(np.float64)
    ref = gaussian_filter(img, sigma, mode="reflect", truncate=10.0)  # half-sample symmetric borders
    np.testing.assert_allclose(retinex.gaussian_blur_exact(img, sigma), ref, atol=1e-6)


@pytest.mark.parametrize("sigma", [15.0, 80.0, 250.0])
def test_fast_blur_within_one_level_of_exact(sigma):
    img = _camera()
    exact = retinex.gaussian_blur_exact(img, sigma)
    fast = retinex.gaussian_blur_fast(img, sigma)
    assert fast.shape == img.shape and fast.dtype == np.float32
    assert np.abs(fast - exact).max() < DATA_EPS


def test_symmetric_border_keeps_edges_bright():
    """Zero padding would darken a bright image's border at sigma 250; symmetric borders do not."""
    img = np.full((64, 96), 0.8, np.float32)
    img[20:40, 30:60] = 1.0
    out = retinex.gaussian_blur_fast(img, 250.0)
    assert out.min() > 0.8 and abs(out.mean() - img.mean()) < 1e-3


def test_jobson_scale_convention():
    r = np.linspace(0, 500, 50)
    c = 120.0
    s = retinex.jobson_c_to_sigma(c)
    np.testing.assert_allclose(np.exp(-r ** 2 / c ** 2), np.exp(-r ** 2 / (2 * s ** 2)))


# --- independent reference (formulas of Jobson 1997 / Petro et al. 2014, scipy blurs, np.percentile) --
def _ref_blur(x, s):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x.astype(np.float64), s, mode="reflect", truncate=12.0)


def _ref_msr(v, sigmas):
    return sum(np.log(v + 1.0) - np.log(_ref_blur(v, s) + 1.0) for s in sigmas) / len(sigmas)


def _ref_balance(x, p=1.0):
    lo, hi = np.percentile(x, [p, 100 - p])
    return np.clip((x - lo) / (hi - lo), 0, 1)


SMALL_SIGMAS = (5.0, 20.0, 60.0)  # scaled-down IPOL scales for a 96 px image (scipy's blur is slow)


def test_msrcr_matches_reference_formula():
    img = _astronaut(96).astype(np.float64)
    v = img * 255.0
    total = v.sum(-1) + 3.0
    ref = np.stack([
        _ref_balance(_ref_msr(v[..., i], SMALL_SIGMAS) * 46.0 * (np.log(125.0 * (v[..., i] + 1.0)) - np.log(total)))
        for i in range(3)], -1)
    ours = _retinex(img, "MSRCR", SMALL_SIGMAS, method="exact")
    assert np.abs(ours - ref).max() < 0.01 and np.abs(ours - ref).mean() < 1e-3
    fast = _retinex(img, "MSRCR", SMALL_SIGMAS, method="fast")
    assert np.abs(fast - ref).mean() < DATA_EPS


def test_msr_and_msrcp_match_reference_formula():
    img = _astronaut(96).astype(np.float64)
    v = img * 255.0
    ref = np.stack([_ref_balance(_ref_msr(v[..., i], SMALL_SIGMAS)) for i in range(3)], -1)
    ours = _retinex(img, "MSR", SMALL_SIGMAS, method="exact")
    assert np.abs(ours - ref).mean() < 1e-3
    # MSRCP: intensity through MSR + balance, then RGB scaled by min(1/max, I_out/I)
    inten = v.mean(-1)
    new = _ref_balance(_ref_msr(inten, SMALL_SIGMAS))
    lit = inten > 1.0  # black pixels have no chromaticity to keep
    gain = np.minimum(1.0 / img.max(-1)[lit], new[lit] / (inten[lit] / 255.0))
    ref = np.clip(img[lit] * gain[..., None], 0, 1)
    ours = _retinex(img, "MSR-intensity", SMALL_SIGMAS, method="exact")
    assert lit.mean() > 0.9 and np.abs(ours[lit] - ref).mean() < 1e-3


def test_msr_intensity_keeps_chromaticity():
    img = _astronaut(96) * 0.8 + 0.1
    out = _retinex(img, "MSR-intensity")
    ok = np.all((out > 0.01) & (out < 0.99), -1)
    assert ok.mean() > 0.5
    chroma_in = img / img.sum(-1, keepdims=True)
    chroma_out = out / np.maximum(out.sum(-1, keepdims=True), 1e-6)
    assert np.abs(chroma_in - chroma_out)[ok].max() < 1e-3


# --- IPOL properties ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fast", "exact"])
def test_constant_image_gives_zero_msr(method):
    v = np.full((40, 70), 0.37 * 255, np.float32)
    r = retinex.msr_channel(v, retinex.DEFAULT_SIGMAS, method)
    assert np.abs(r).max() < 1e-5


@pytest.mark.parametrize("mode", ["MSR", "MSRCR"])
def test_balance_saturates_one_percent_per_channel(mode):
    img = _astronaut(160)
    out = _retinex(img, mode)  # IPOL defaults: sigmas 15, 80, 250, 1 % + 1 %
    n = out.shape[0] * out.shape[1]
    for i in range(3):
        low = np.count_nonzero(out[..., i] <= 0.0) / n
        high = np.count_nonzero(out[..., i] >= 1.0) / n
        assert 0.008 <= low <= 0.013, (i, low)
        assert 0.008 <= high <= 0.013, (i, high)


def test_balance_on_large_image_uses_sample_but_stays_near_one_percent(rng):
    x = rng.random(3_000_000, dtype=np.float32)
    out, ok = retinex.simplest_color_balance(x, 1.0, 2.0)
    assert ok
    assert abs((out <= 0).mean() - 0.01) < 0.001 and abs((out >= 1).mean() - 0.02) < 0.001


def test_balance_bounds_match_numpy_percentile(rng):
    x = rng.normal(size=20001).astype(np.float32)
    lo, hi = retinex.balance_bounds(x, 1.0, 1.0)
    plo, phi = np.percentile(x, [1, 99])
    assert abs(lo - plo) < 0.01 and abs(hi - phi) < 0.01


# --- bad input --------------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        _retinex(np.full((8, 8, 3), np.nan))
    with pytest.raises(ValueError, match="mode"):
        _retinex(np.zeros((8, 8, 3)), mode="SSR")
    with pytest.raises(ValueError, match="sigma"):
        _retinex(np.zeros((8, 8, 3)), sigmas=(15, -1))
    with pytest.raises(ValueError, match="percent"):
        _retinex(np.zeros((8, 8, 3)), low_clip=70)
    with pytest.raises(ValueError, match="numbers"):
        retinex.parse_sigmas("15, eighty")
    assert retinex.parse_sigmas("15; 80 250") == (15.0, 80.0, 250.0)
    for mode in retinex.MODES:
        flat = np.full((12, 20, 3), 0.42, np.float32)
        np.testing.assert_allclose(_retinex(flat, mode), flat, atol=1e-6)
        one = _retinex(np.full((1, 1, 3), 0.3, np.float32), mode)
        assert one.shape == (1, 1, 3) and np.isfinite(one).all()
        big = _retinex(_astronaut(48) * 65535.0, mode)
        assert np.isfinite(big).all() and 0 <= big.min() and big.max() <= 1 and big.std() > 0.1
    gray = _retinex(_camera(40, 50))
    assert gray.shape == (40, 50) and np.isfinite(gray).all()


# --- node -------------------------------------------------------------------------------------------------
@pytest.fixture
def node():
    from restorekit.nodes import contrast

    return contrast.RestoreKitRetinex()


def test_node_batch_modes_info(node):
    a = torch.from_numpy(_astronaut(64))
    batch = torch.stack([a, a.flip(0) * 0.5])
    for mode in ("MSRCR", "MSR", "MSR-intensity"):
        out, info = node.enhance(batch, mode, "15, 80, 250", 1.0, 1.0, "fast")
        assert out.shape == batch.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        ref, report = retinex.retinex(batch[1].numpy(), mode, "15, 80, 250")  # the node's per-image call
        np.testing.assert_allclose(out[1].numpy(), ref, atol=1e-6)
        assert (report.mode, report.sigmas, report.low_clip, report.high_clip) == (mode, (15, 80, 250), 1, 1)


def test_node_rgba_and_gray(node):
    rgba = torch.from_numpy(np.concatenate([_astronaut(40), np.linspace(0, 1, 1600, dtype=np.float32).reshape(40, 40, 1)], -1))[None]
    out, info = node.enhance(rgba, "MSRCR", "15, 80, 250", 1.0, 1.0, "exact")
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3])  # alpha untouched
    gray = torch.from_numpy(_camera(40, 56))[None, ..., None]
    out, info = node.enhance(gray, "MSRCR", "15, 80, 250", 1.0, 1.0, "fast")
    assert out.shape == gray.shape
    assert retinex.retinex(gray[0].numpy(), "MSRCR")[1].grey  # grey input: plain MSR


def test_node_bad_input(node):
    with pytest.raises(ValueError, match="NaN"):
        node.enhance(torch.full((1, 8, 8, 3), float("nan")), "MSR", "15, 80, 250", 1.0, 1.0, "fast")
    with pytest.raises(ValueError, match="sigmas"):
        node.enhance(torch.zeros((1, 8, 8, 3)), "MSR", "abc", 1.0, 1.0, "fast")
    out, info = node.enhance(torch.from_numpy(_astronaut(32) * 65535.0)[None], "MSRCR", "15, 80, 250", 1.0, 1.0, "fast")
    assert torch.isfinite(out).all()
    ref, _ = node.enhance(torch.from_numpy(_astronaut(32))[None], "MSRCR", "15, 80, 250", 1.0, 1.0, "fast")
    assert (out - ref).abs().max() < 2e-3  # read as 16-bit data and scaled, not clipped
    for img in (torch.full((1, 1, 1, 3), 0.5), torch.full((1, 9, 9, 3), 0.25)):
        out, _ = node.enhance(img, "MSRCR", "15, 80, 250", 1.0, 1.0, "fast")
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert math.isclose(float(out.mean()), float(img.mean()), abs_tol=1e-5)


@pytest.mark.parametrize("shape", [(37, 53, 3), (41, 29, 1), (300, 17, 3)])
def test_fast_path_matches_exact_on_odd_sizes(shape, rng):
    img = rng.random(shape).astype(np.float32)
    img = retinex.gaussian_blur_exact(img, 2.0).astype(np.float32)  # some structure, not pure noise
    for mode in retinex.MODES:
        fast = _retinex(img, mode)
        exact = _retinex(img, mode, method="exact")
        assert fast.shape == img.shape
        assert np.abs(fast - exact).mean() < DATA_EPS
