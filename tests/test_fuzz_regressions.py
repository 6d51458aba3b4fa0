"""Regressions found by fuzzing (issue 13): each test feeds the input that failed and checks the root
fix, not the symptom.  Inputs that made a NaN inside run under ``np.errstate(invalid="raise")`` so
the 0/0 itself fails the test, even where a later step would have hidden it."""
import numpy as np
import pytest
import torch

from fuzz import mentions_nonfinite
from restorekit import NODE_CLASS_MAPPINGS
from restorekit.scripts import bm3d_denoise as bd
from restorekit.scripts import denoise as dn
from restorekit.scripts import grain
from restorekit.scripts import noise
from restorekit.scripts import sharpen as sh


def _node(name):
    cls = NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)


def _astronaut_64x96():
    from skimage import data

    return data.astronaut()[100:164, 100:196].astype(np.float64) / 255.0


# --- item 1: Smart Sharpen radius 0.1 returned an all-black image --------------------------------
@pytest.mark.parametrize("space", ["oklab", "luma", "rgb"])
def test_sharpen_subpixel_radius_is_identity_not_black(space):
    img = np.clip(_astronaut_64x96() + np.random.default_rng(0).normal(0, 0.02, (64, 96, 3)), 0, 1)
    with np.errstate(invalid="raise", divide="raise"):  # the soft-coring 0/0 of a 1-tap Gaussian
        out, rep = sh.sharpen(img, amount=2.0, radius=0.1, space=space)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, img, atol=1e-5)  # a 0.1 px Gaussian blurs nothing: no detail
    assert any("unchanged" in n for n in rep.notes)
    out2, _ = sh.sharpen(img, amount=2.0, radius=0.2, space=space)  # 0.2 px: a (tiny) change
    assert np.isfinite(out2).all() and float(np.abs(out2 - img).mean()) < 0.01


def test_sharpen_node_radius_0_1_keeps_the_image():
    x = torch.from_numpy(_astronaut_64x96()[None].astype(np.float32))
    out, info = _node("RestoreKitSmartSharpen")(image=x, amount=1.0, radius=0.1)
    assert float(out.mean()) > 0.3 and torch.allclose(out, x, atol=1e-4)
    assert not mentions_nonfinite(info)


# --- item 2: Film Grain fallback, Wiener gain 0/0 ----------------------------------------------
def test_grain_fallback_block_128_on_64x96():
    z = _astronaut_64x96()
    est = grain.estimate_grain_psd(z, block=128)
    # a 64 px block leaves two blocks: the image itself would be the "grain"; enough blocks fit at 32
    assert est.block == 32 and est.blocks >= 6 and "reduced" in est.notes[0]
    with np.errstate(invalid="raise", divide="raise"):
        out = bd.denoise(z, psd=est.psd, method="fallback").image
    assert np.isfinite(out).all()
    assert float(np.abs(out - z).mean()) < 0.01  # light grain removal, no black blotches
    assert float((out < 1e-6).mean()) <= float((z < 1e-6).mean()) + 0.01


def test_grain_fallback_quantised_gradient_block_8():
    yy = np.mgrid[0:48, 0:48][0]
    q = np.round((0.25 + 0.5 * yy / 48) * 255) / 255  # 8-bit steps of a smooth ramp
    est = grain.estimate_grain_psd(q, block=8)
    with np.errstate(invalid="raise", divide="raise"):
        out = bd.denoise(q, psd=est.psd, method="fallback").image
    assert np.isfinite(out).all() and float(np.abs(out - q).max()) < 0.02


def test_grain_node_block_128_fallback():
    x = torch.from_numpy(_astronaut_64x96()[None].astype(np.float32))
    out, info = _node("RestoreKitFilmGrainBM3D")(image=x, block=128, method="fallback")
    assert torch.isfinite(out).all() and float((out - x).abs().mean()) < 0.01
    assert not mentions_nonfinite(info)


@pytest.mark.skipif(not bd.bm3d_available(), reason="optional bm3d package not installed")
def test_bm3d_package_image_smaller_than_its_blocks_uses_the_fallback():
    z = np.full((10, 11, 3), 0.5) + np.random.default_rng(0).normal(0, 0.05, (10, 11, 3))
    r = bd.denoise(z, sigma=0.3, method="bm3d", profile="vn")  # vn's Wiener blocks are 11 px
    assert "fallback" in r.path and str(bd.PACKAGE_MIN_SIDE) in r.detail
    assert np.isfinite(r.image).all()


# --- item 3: sigma 0 on an all-black frame: "got nan" / "noise sigma: nan" ------------------------
def test_noise_estimate_of_a_flat_frame_is_zero():
    for img in (np.zeros((32, 32, 3)), np.full((20, 24), 0.7), np.zeros((5, 5, 1))):
        with np.errstate(invalid="raise", divide="raise"):
            assert noise.estimate_noise_sigma(img, "skimage") < 1e-12
            assert noise.estimate_noise_sigma(img, "mad") == 0.0
    # one flat channel among noisy ones counts as 0, not NaN (skimage's mean would be NaN)
    rng = np.random.default_rng(1)
    mixed = np.stack([0.5 + 0.05 * rng.standard_normal((64, 64)), np.zeros((64, 64)),
                      0.5 + 0.05 * rng.standard_normal((64, 64))], axis=-1)
    s = noise.estimate_noise_sigma(mixed, "skimage")
    assert abs(s - 2 * 0.05 / 3) < 0.005


def test_black_frame_in_a_video_batch_white_noise_mode():
    frames = torch.rand(3, 24, 32, 3) * 0.2 + 0.4
    frames[1] = 0.0  # one black frame
    out, info = _node("RestoreKitFilmGrainBM3D")(image=frames, noise_model="white noise (sigma)", sigma=0.0,
                                                 method="fallback")
    assert torch.isfinite(out).all() and torch.equal(out[1], frames[1])
    assert not mentions_nonfinite(info)


@pytest.mark.parametrize("method", ["nlm", "bilateral", "wavelet", "tv"])
def test_classical_denoise_black_frame_reports_zero_sigma(method):
    out, rep = dn.denoise(np.zeros((24, 32, 3)), method)
    assert rep.sigma == 0.0 and "unchanged" in rep.sigma_source and np.array_equal(out, np.zeros((24, 32, 3)))
    x = torch.zeros(2, 24, 32, 3)
    out, info = _node("RestoreKitDenoise")(image=x, method=method)
    assert torch.equal(out, x) and not mentions_nonfinite(info)


# --- memory (item 9, classical nodes): work in strips, the same result -------------------------------
def test_gaussian_blur_in_strips_equals_one_convolution(monkeypatch):
    from restorekit.scripts import frequency as fq

    x = torch.rand(2, 3, 61, 47, dtype=torch.float64)
    whole = fq.gaussian_blur(x, 3.0)
    monkeypatch.setattr(fq, "CONV_STRIP_BYTES", 2048)  # a few rows per strip
    torch.testing.assert_close(fq.gaussian_blur(x, 3.0), whole, atol=1e-12, rtol=0)  # summation order only


def test_clahe_colour_conversion_in_strips_equals_whole(monkeypatch):
    from restorekit.scripts import clahe

    img = _astronaut_64x96().astype(np.float32)
    whole = {ch: clahe.clahe(img, 3.0, 4, ch) for ch in clahe.CHANNELS}
    monkeypatch.setattr(clahe, "STRIP_BYTES", 4096)  # one or two rows per strip
    for ch in clahe.CHANNELS:
        # the same maps; vectorised colour transforms round differently at strip ends (< 1e-4 << 1/255)
        np.testing.assert_allclose(clahe.clahe(img, 3.0, 4, ch), whole[ch], atol=1e-4, rtol=0)


def test_psf_info_never_says_nan():
    # a PSF much wider than its frame (size 9 px at 1 nm per pixel): FWHM not measurable
    cls = NODE_CLASS_MAPPINGS["RestoreKitPSF"]
    from _workflows import input_specs

    kw = {s.name: s.options["default"] for s in input_specs(cls) if "default" in s.options}
    kw.update(size=9, pixel_size=0.001)
    image, psf, info = _node("RestoreKitPSF")(**kw)
    assert torch.isfinite(image).all() and not mentions_nonfinite(info)
    assert "wider than the PSF frame" in info


def test_jpeg_of_incompressible_content_is_written(tmp_path):
    # found by fuzzing Save Image (16-bit/float): noise at quality 95 overflowed Pillow's buffer for
    # an optimised JPEG (OSError "broken data stream", libjpeg "Suspension not allowed here")
    from restorekit.scripts import image_io

    px = np.random.default_rng(0).random((2215, 21, 3)).astype(np.float32)
    res = image_io.write_image(str(tmp_path / "noise.jpg"), px, bit_depth=8, quality=95)
    back = image_io.read_image(res.path).pixels
    assert back.shape == (2215, 21, 3) and any("Huffman" in n for n in res.notes)
    assert float(np.abs(back - px).mean()) < 0.1


def test_damage_analysis_takes_arrays_in_as_restore_does():
    # found by fuzzing Damage Analysis: values like 1e30 reached the FFT features, which overflowed to
    # inf, and scikit-learn refused them (a foreign ValueError); restore() already refused such data
    x = torch.full((1, 28, 24, 3), 0.5)
    x[0, :, :12] = 1e30
    with pytest.raises(ValueError, match="float pixel values must be in 0..1"):
        _node("RestoreKitDamageAnalysis")(image=x, estimator="forest")
    over = torch.rand(1, 28, 24, 3) * 1.2 - 0.1  # slightly out of range: clipped, as restore() does
    out = _node("RestoreKitDamageAnalysis")(image=over, estimator="forest")
    assert not mentions_nonfinite(out["result"][2])


# --- no silent masking: a NaN made inside is an error naming the node and the step ----------------------
@pytest.mark.filterwarnings("ignore:image is size")  # skimage's colour guess for a 4-px-wide plane
@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (9, 4), (120, 31)])
def test_noise_sigma_equals_skimage_where_skimage_is_defined(shape):
    from skimage.restoration import estimate_sigma

    rng = np.random.default_rng(sum(shape))
    for img in (0.5 + 0.07 * rng.standard_normal(shape),              # pure noise
                np.round(rng.random(shape) * 4) / 4,                  # piecewise constant, some zeros
                np.add.outer(np.arange(shape[0]), np.arange(shape[1])) / 200.0):  # a ramp
        ref = float(estimate_sigma(img))
        if np.isfinite(ref):
            assert abs(noise._skimage_sigma(img) - ref) <= 1e-12 * max(1.0, ref)


def _nan_like(x, *a, **k):
    return np.full(np.shape(x), np.nan)


def test_sharpen_internal_nan_is_an_error(monkeypatch):
    from restorekit.scripts.finite import NonFiniteError

    monkeypatch.setattr(sh, "_gauss", _nan_like)
    with pytest.raises(NonFiniteError, match="Smart Sharpen: the oklab sharpening step produced"):
        sh.sharpen(_astronaut_64x96(), amount=1.0, radius=1.0, noise_sigma=0.0)


def test_classical_denoise_internal_nan_is_an_error(monkeypatch):
    from restorekit.scripts.finite import NonFiniteError

    monkeypatch.setattr(dn, "denoise_tv", _nan_like)
    with pytest.raises(NonFiniteError, match="Classical Denoise: the tv denoising step"):
        dn.denoise(_astronaut_64x96(), "tv", sigma=0.05)


def test_film_grain_internal_nan_is_an_error(monkeypatch):
    from restorekit.scripts.finite import NonFiniteError

    monkeypatch.setattr(bd, "fallback_denoise", _nan_like)
    with pytest.raises(NonFiniteError, match="Film Grain Denoise: the fallback"):
        bd.denoise(_astronaut_64x96(), sigma=0.05, method="fallback")


def test_lbclahe_features_refuse_nan_and_check_their_own_result(monkeypatch):
    import types

    from restorekit.scripts import lbclahe
    from restorekit.scripts.finite import NonFiniteError

    plane = _astronaut_64x96()[:, :, 0]
    assert np.isfinite(lbclahe.features(plane)).all()
    bad = plane.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):  # was replaced by 0 before
        lbclahe.features(bad)
    monkeypatch.setattr(lbclahe, "math", types.SimpleNamespace(log2=lambda v: float("nan")))
    with pytest.raises(NonFiniteError, match="Learning-Based CLAHE: the feature extraction step"):
        lbclahe.features(plane)


def test_low_light_fallback_gamma_of_negative_input_is_not_nan():
    # found by the long fuzz profile: SFHformer low-light's classical fallback (gamma 0.6 + CLAHE) on
    # model-node input, which is taken as is, computed (-x)**0.6 = NaN and refused its own result
    from restorekit.scripts.inference import chain

    img = np.clip(_astronaut_64x96(), 0, 1).astype(np.float32) * 1.4 - 0.2  # below 0 and above 1
    with np.errstate(invalid="raise"):
        out = chain._clahe(img, {}, gamma=0.6)
    assert np.isfinite(out).all() and out.shape == img.shape
    ref = chain._clahe(np.where(img < 0, 0.0, img).astype(np.float32), {}, gamma=0.6)
    np.testing.assert_array_equal(out, ref)  # negatives count as black
