"""Frequency enhancement: separation/recombination round trip, high-boost and homomorphic response."""
import math

import numpy as np
import pytest
import torch

from restorekit.scripts import frequency as fq
from restorekit.scripts.batch import map_images, read_images


@pytest.mark.parametrize("seed", range(4))
def test_separate_combine_reconstructs(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = int(torch.randint(1, 70, (1,), generator=g)), int(torch.randint(1, 70, (1,), generator=g))
    x = torch.rand(2, 3, h, w, generator=g)
    sigma = float(torch.rand(1, generator=g)) * 20 + 0.3
    low, high = fq.separate(x, sigma=sigma, scale=0.5)
    assert float(high.min()) >= 0 and float(high.max()) <= 1  # scale 0.5 never clips
    back = fq.combine(low, high, scale=0.5)
    assert torch.allclose(back, x, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 2.5])
def test_gaussian_blur_matches_scipy(sigma):
    from scipy.ndimage import gaussian_filter

    x = torch.rand(40, 50, dtype=torch.float64)
    ref = gaussian_filter(x.numpy(), sigma, mode="mirror", truncate=4.0)  # mirror = torch reflect
    assert np.allclose(fq.gaussian_blur(x, sigma).numpy(), ref, atol=1e-12)


def test_combine_detail_gain():
    x = torch.rand(1, 1, 32, 32)
    low, high = fq.separate(x, 2.0)
    assert torch.allclose(fq.combine(low, high, detail=0.0), low)
    assert torch.allclose(fq.combine(low, high, detail=2.0), low + 2 * (x - low), atol=1e-5)


def test_high_boost_exact_on_periodic_sinusoid():
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    for k in (2, 8, 20):
        f = k / w
        img = 0.5 + 0.2 * torch.cos(2 * math.pi * f * xx)
        out = fq.high_boost(img, sigma=2.0, boost=1.5, pad="circular")
        gain = 1 + 1.5 * (1 - math.exp(-2 * math.pi ** 2 * 4.0 * f * f))
        assert torch.allclose(out, 0.5 + 0.2 * gain * torch.cos(2 * math.pi * f * xx), atol=1e-9)
    # constant image and the mean are kept; reflect padding leaves flat images flat
    flat = torch.full((1, 3, 20, 30), 0.3)
    assert torch.allclose(fq.high_boost(flat, 3.0, 2.0), flat, atol=1e-6)
    r = torch.rand(1, 1, 48, 48, dtype=torch.float64)
    assert abs(float(fq.high_boost(r, 2.0, 1.0, pad="circular").mean() - r.mean())) < 1e-12


def test_high_boost_matches_spatial_usm_in_interior():
    """H = 1 + b(1 − G) is unsharp masking x + b(x − G⊛x): same result away from the borders."""
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    out = fq.high_boost(x, sigma=1.5, boost=0.8)
    usm = x + 0.8 * (x - fq.gaussian_blur(x, 1.5))
    assert torch.allclose(out[..., 12:-12, 12:-12], usm[..., 12:-12, 12:-12], atol=2e-3)


def test_homomorphic_compresses_illumination_and_lifts_detail():
    h, w = 96, 96
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    illum = 0.15 + 0.8 * (xx / (w - 1))  # strong left-to-right lighting gradient
    refl = np.clip(0.6 + 0.25 * np.sign(np.sin(2 * np.pi * yy / 8) * np.sin(2 * np.pi * xx / 8)), 0, 1)
    x = torch.from_numpy(illum * refl)
    out = fq.homomorphic(x, sigma=20.0, gamma_low=0.5, gamma_high=1.5).numpy()
    lx, lo = np.log(x.numpy() + 1e-3), np.log(np.maximum(out, 0) + 1e-3)
    # illumination range (column means of log, across the gradient) roughly halves
    c_in, c_out = lx.mean(0), lo.mean(0)
    ratio = (c_out[70:80].mean() - c_out[16:26].mean()) / (c_in[70:80].mean() - c_in[16:26].mean())
    assert 0.35 < ratio < 0.75, ratio
    # checkerboard detail contrast grows (in log terms)
    d_in = np.std(lx[:, 40:56] - c_in[None, 40:56])
    d_out = np.std(lo[:, 40:56] - c_out[None, 40:56])
    assert d_out > 1.25 * d_in
    # mean log brightness kept; gammas 1/1 are the identity
    assert abs(lo.mean() - lx.mean()) < 0.02
    assert torch.allclose(fq.homomorphic(x, 20.0, 1.0, 1.0), x, atol=1e-9)


# --- nodes --------------------------------------------------------------------------------------
def _nodes():
    from restorekit.nodes import frequency as nf

    return nf.RestoreKitFrequencyEnhance(), nf.RestoreKitFrequencySeparate(), nf.RestoreKitFrequencyCombine()


@pytest.mark.parametrize("c", [1, 3, 4])
def test_nodes_shapes_alpha_batch(c):
    enh, sep, comb = _nodes()
    x = torch.rand(2, 24, 32, c) * 0.8 + 0.1
    for mode in ("high_boost", "homomorphic"):
        out, info = enh.enhance(x, mode=mode, sigma=2.0 if mode == "high_boost" else 10.0, device="cpu")
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert 0 <= float(out.min()) and float(out.max()) <= 1
        ref, report = map_images(x, lambda t, device: fq.enhance_image(t, mode, 2.0 if mode == "high_boost" else 10.0,
                                                                      device=device),
                                 what="Frequency Enhance", per_image=False, device="cpu")
        assert torch.equal(out, ref) and report.item.mode == mode and report.device.startswith("cpu")
        if c == 4:
            assert torch.equal(out[..., 3], x[..., 3])
    low, high, info = sep.separate(x, sigma=3.0, scale=0.5, device="cpu")
    assert low.shape == x.shape and high.shape == x.shape
    assert fq.separate_image(x[..., :min(c, 3)], sigma=3.0, scale=0.5)[1].clipped == 0.0  # round trip exact
    back, info2 = comb.combine(low, high, scale=0.5, detail=1.0, device="cpu")
    assert back.shape == x.shape and info2.startswith("Frequency Combine")
    assert torch.allclose(back, x, atol=1e-5)
    if c == 4:
        assert torch.equal(back[..., 3], x[..., 3])


def test_enhance_oklab_keeps_colour_of_flat_areas():
    enh, _, _ = _nodes()
    x = torch.zeros(1, 32, 32, 3)
    x[..., :] = torch.tensor([0.6, 0.3, 0.2])
    out, info = enh.enhance(x, mode="high_boost", sigma=2.0, boost=2.0, space="oklab", device="cpu")
    assert torch.allclose(out, x, atol=1e-5) and fq.enhance_image(x, space="oklab")[1].space == "oklab"


def test_nodes_bad_input():
    enh, sep, comb = _nodes()
    with pytest.raises(ValueError, match="NaN"):
        enh.enhance(torch.full((1, 8, 8, 3), float("nan")))
    for img in (torch.rand(1, 1, 1, 3), torch.full((1, 16, 16, 3), 0.5), torch.rand(1, 16, 16, 3) * 65535):
        for mode in ("high_boost", "homomorphic"):
            out, info = enh.enhance(img, mode=mode, device="cpu")
            assert out.shape == img.shape and torch.isfinite(out).all()
        low, high, _ = sep.separate(img, device="cpu")
        assert torch.isfinite(low).all() and torch.isfinite(high).all()
    assert read_images(img)[1].scale == 65535  # the 16-bit input was rescaled, not clipped
    with pytest.raises(ValueError, match="differ in size"):
        comb.combine(torch.rand(1, 8, 8, 3), torch.rand(1, 9, 8, 3))
