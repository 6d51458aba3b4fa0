"""Film-grain PSD estimation and BM3D denoising (package path and permissive fallback).

References (../shared/REFERENCES.md, BM3D): synthetic grain std 0.06 -> estimated-spectrum BM3D
28.92 dB vs 25.33 dB treated as white noise; PSD convention |FFT2(kernel)|²·M·N.
"""
import numpy as np
import pytest
import torch

from restorekit.scripts import bm3d_denoise as bd
from restorekit.scripts import grain
from restorekit.scripts.batch import map_images, read_images
from restorekit.scripts.film_grain import denoise_film_grain
from restorekit.scripts.metrics import psnr


def _psnr(a, b):
    return psnr(b, np.clip(a, 0, 1))


@pytest.fixture(scope="module")
def grainy():
    """skimage camera 160×160 crop (ships in the scikit-image wheel) + grain std 0.06 (σ 1 px)."""
    from skimage import data

    img = data.camera()[40:200, 200:360].astype(np.float64) / 255.0
    noise, psd = grain.synthetic_grain(img.shape, 0.06, 1.0, np.random.default_rng(0))
    return img, img + noise, psd


def test_kernel_psd_convention_white():
    # a delta kernel of weight σ is white noise: PSD = σ²·M·N everywhere
    k = np.zeros((3, 3))
    k[1, 1] = 0.1
    np.testing.assert_allclose(grain.kernel_psd(k, (16, 20)), 0.01 * 16 * 20, rtol=1e-12)
    np.testing.assert_allclose(grain.white_psd(0.1, (16, 20)), 0.01 * 16 * 20)


def test_psd_estimate_matches_true_psd_on_pure_grain():
    noise, psd = grain.synthetic_grain((192, 192), 0.05, 1.2, np.random.default_rng(3))
    est = grain.estimate_grain_psd(noise + 0.5, block=32, fraction=1.0)
    assert est.psd.shape == psd.shape
    assert abs(est.sigma[0] - 0.05) / 0.05 < 0.06
    # spectral shape: relative error where the true PSD is above 1 % of its peak
    band = psd > 0.01 * psd.max()
    rel = np.abs(est.psd[band] - psd[band]) / psd[band]
    assert np.median(rel) < 0.15
    assert 0.85 < est.psd[0, 0] / psd[0, 0] < 1.3  # DC: the mean/plane-removal bias is corrected


def test_white_noise_psd_is_flat():
    rng = np.random.default_rng(5)
    est = grain.estimate_grain_psd(0.4 + 0.03 * rng.standard_normal((128, 128)), fraction=1.0)
    m = est.psd / (128 * 128)
    assert abs(np.sqrt(m.mean()) - 0.03) < 0.002
    assert m.std() / m.mean() < 0.25


def test_mask_selects_region():
    rng = np.random.default_rng(7)
    img = np.zeros((96, 96)) + 0.5
    img[:, :48] += 0.02 * rng.standard_normal((96, 48))
    img[:, 48:] += 0.08 * rng.standard_normal((96, 48))
    mask = np.zeros((96, 96))
    mask[:, 56:] = 1
    est = grain.estimate_grain_psd(img, mask=mask, block=16)
    assert est.source == "mask"
    assert abs(est.sigma[0] - 0.08) < 0.01
    with pytest.raises(ValueError, match="mask shape"):
        grain.estimate_grain_psd(img, mask=np.ones((10, 10)))


@pytest.mark.skipif(not bd.bm3d_available(), reason="optional bm3d package not installed")
def test_bm3d_estimated_spectrum_beats_white(grainy):
    img, noisy, _ = grainy
    est = grain.estimate_grain_psd(noisy)
    r_est = bd.denoise(noisy, psd=est.psd)
    r_white = bd.denoise(noisy, sigma=0.06)
    assert r_est.path == "bm3d package"
    p_est, p_white = _psnr(r_est.image, img), _psnr(r_white.image, img)
    assert p_est >= 28.5, p_est
    assert p_est - p_white >= 2.0, (p_est, p_white)
    # numpy stays as it was: the trapz alias lives only in bm4d's namespace
    if np.lib.NumpyVersion(np.__version__) >= "2.4.0":
        assert not hasattr(np, "trapz")


def test_fallback_psd_aware(grainy):
    img, noisy, psd = grainy
    est = grain.estimate_grain_psd(noisy)
    r = bd.denoise(noisy, psd=est.psd, method="fallback")
    r_white = bd.denoise(noisy, sigma=float(est.sigma[0]), method="fallback")
    assert r.path.startswith("fallback")
    p, p_noisy, p_white = _psnr(r.image, img), _psnr(noisy, img), _psnr(r_white.image, img)
    assert p - p_noisy >= 2.5, (p, p_noisy)
    assert p > p_white + 0.5, (p, p_white)


def test_fallback_when_package_missing(monkeypatch, grainy):
    img, noisy, _ = grainy
    monkeypatch.setattr(bd, "bm3d_available", lambda: False)
    r = bd.denoise(noisy[:64, :64], sigma=0.05)
    assert "fallback" in r.path and "not installed" in r.detail
    with pytest.raises(RuntimeError, match="not installed"):
        bd.denoise(noisy[:64, :64], sigma=0.05, method="bm3d")


def test_fallback_white_noise_rgb():
    from skimage import data

    img = data.astronaut()[100:196, 150:246].astype(np.float64) / 255
    noisy = img + np.random.default_rng(1).normal(0, 0.08, img.shape)
    r = bd.denoise(noisy, sigma=0.08, method="fallback")
    assert r.image.shape == img.shape
    assert _psnr(r.image, img) - _psnr(noisy, img) > 4.0


def test_bad_arguments():
    z = np.full((32, 32), 0.5)
    with pytest.raises(ValueError, match="either sigma"):
        bd.denoise(z)
    with pytest.raises(ValueError, match="NaN"):
        bd.denoise(np.full((16, 16), np.nan), sigma=0.1)
    with pytest.raises(ValueError, match="profile"):
        bd.bm3d_package(z, sigma=0.1, profile="refilter")
    with pytest.raises(ValueError, match="PSD shape"):
        bd.denoise(z, psd=np.ones((8, 8)))
    # constant image: the estimated grain is zero -> unchanged, no NaN
    est = grain.estimate_grain_psd(z)
    r = bd.denoise(z, psd=est.psd)
    assert np.all(np.isfinite(r.image)) and np.allclose(r.image, 0.5)


# --- node -----------------------------------------------------------------------------------
def _node():
    from restorekit.nodes.denoise import RestoreKitFilmGrainBM3D

    return RestoreKitFilmGrainBM3D()


def _library_call(x, **kw):
    """The node's library call (without a mask): denoise_film_grain per image through the batch mapper."""
    return map_images(x, lambda img: denoise_film_grain(img, **kw), what="Film Grain Denoise (BM3D)")


def _grain_batch(c, b=1, size=48, seed=0):
    from skimage import data

    base = data.astronaut()[200:200 + size, 200:200 + size].astype(np.float32) / 255
    rng = np.random.default_rng(seed)
    imgs = []
    for i in range(b):
        im = base if c >= 3 else base.mean(axis=2, keepdims=True)
        im = np.clip(im + rng.normal(0, 0.05, im.shape), 0, 1).astype(np.float32)
        if c == 4:
            im = np.concatenate([im, rng.random((size, size, 1)).astype(np.float32)], axis=2)
        imgs.append(im)
    return torch.from_numpy(np.stack(imgs))


@pytest.mark.parametrize("c,b", [(3, 2), (1, 1), (4, 1)])
def test_node_shapes_fallback(c, b):
    x = _grain_batch(c, b)
    out, info = _node().denoise(x, method="fallback")
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    ref, report = _library_call(x, method="fallback")
    assert torch.equal(out, ref) and len(report.items) == b
    for r in report.items:
        assert r.denoiser == "fallback" and r.sigma_source == "flat blocks" and r.blocks > 0
        assert len(r.sigma) == (1 if c == 1 else 3) and all(0 < s < 0.2 for s in r.sigma)
    if c == 4:
        assert torch.equal(out[..., 3], x[..., 3])
    # the grain was reduced
    assert (out[..., :3] - out[..., :3].mean()).std() < (x[..., :3] - x[..., :3].mean()).std()


@pytest.mark.skipif(not bd.bm3d_available(), reason="optional bm3d package not installed")
def test_node_bm3d_white_mode_and_mask():
    x = _grain_batch(3, 1, size=40)
    mask = torch.ones(1, 40, 40)
    out, info = _node().denoise(x, noise_model="white noise (sigma)", sigma=0.0, profile="lc")
    assert out.shape == x.shape and torch.isfinite(out).all()
    rep = denoise_film_grain(x[0].numpy(), "white noise (sigma)", profile="lc")[1]
    assert rep.denoiser == "bm3d" and rep.sigma_source.startswith("estimated")
    assert "non-commercial" in rep.info_fields()["licence"]
    out2, info2 = _node().denoise(x[..., :1], mask=mask, profile="lc", block=16)
    assert out2.shape == (1, 40, 40, 1)
    rep = denoise_film_grain(x[0, ..., :1].numpy(), profile="lc", block=16, mask=mask[0].numpy())[1]
    assert rep.sigma_source == "mask" and torch.allclose(out2[0], torch.from_numpy(
        denoise_film_grain(x[0, ..., :1].numpy(), profile="lc", block=16, mask=mask[0].numpy())[0]).float(), atol=1e-6)


def test_node_grey_in_rgb_runs_as_one_channel():
    g = _grain_batch(1, 1, size=40)
    out_rgb, info = _node().denoise(g.repeat(1, 1, 1, 3), method="fallback")
    out_g, _ = _node().denoise(g, method="fallback")
    assert _library_call(g.repeat(1, 1, 1, 3), method="fallback")[1].item.grey_rgb
    assert torch.allclose(out_rgb, out_g.repeat(1, 1, 1, 3), atol=1e-6)


def test_node_bad_input():
    node = _node()
    x = torch.rand(1, 16, 16, 3)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        node.denoise(x)
    with pytest.raises(ValueError, match="channels"):
        node.denoise(torch.rand(1, 3, 16, 16))
    # 1×1, constant and 16-bit-range inputs give valid output
    for img in (torch.rand(1, 1, 1, 3), torch.full((1, 24, 24, 3), 0.3), torch.rand(1, 24, 24, 3) * 65535):
        out, info = node.denoise(img, method="fallback")
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
    assert read_images(img)[1].scale == 65535  # the 16-bit input was rescaled, not clipped


@pytest.mark.parametrize("shape,step", [((37, 53), 4), ((61, 40), 8), ((16, 17), 4)])
def test_fast_sliding_dft_filter_equals_the_plain_loop(shape, step):
    """The vectorised filter (real FFTs in float32) against the loop written with full complex float64
    FFTs, both stages, white and coloured noise."""
    rng = np.random.default_rng(sum(shape) + step)
    h, w = shape
    z = np.clip(0.5 + 0.2 * np.sin(np.arange(w) / 5.0)[None] + rng.normal(0, 0.05, shape), 0, 1)
    coloured = bd._block_psd(np.abs(np.fft.fft2(rng.normal(0, 1, (32, 32)))) ** 2 * 1e-3, 16)
    for nb in (np.full((16, 16), 0.05 ** 2 * 256), coloured):
        pilot = bd._sliding_dft_filter_loop(z, nb, None, 16, step, 2.7)
        np.testing.assert_allclose(bd._sliding_dft_filter(z, nb, None, 16, step, 2.7), pilot, atol=1e-5)
        np.testing.assert_allclose(bd._sliding_dft_filter(z, nb, pilot, 16, step, 0.0),
                                   bd._sliding_dft_filter_loop(z, nb, pilot, 16, step, 0.0), atol=1e-5)
