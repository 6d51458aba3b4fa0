"""Deconvolution (scripts/deconvolution.py, scripts/kernels.py) and the Deconvolve node.

REFERENCES.md (Optics): skimage camera blurred with a Gaussian σ 1.6: blurred 26.83 dB, RL 30
iterations 29.39 dB, Wiener (balance 0.01) 29.36 dB; with noise, RL degrades from 30 to 100
iterations (over-iteration).  Here a 256² crop of the blurred full image is used (the content beyond
the crop is unknown to the deconvolution, as in a real photo).
"""
import numpy as np
import pytest
import torch
from scipy import ndimage

from restorekit.scripts import deconvolution as D
from restorekit.scripts import kernels as K
from restorekit.scripts.metrics import psnr
from restorekit.scripts.noise import mad_sigma

CROP = (slice(128, 384), slice(160, 416))
BAND = 16  # border band width (px)


@pytest.fixture(scope="module")
def camera():
    from skimage import data

    img = data.camera().astype(np.float64) / 255.0
    blurred = ndimage.gaussian_filter(img, 1.6, mode="reflect")
    return img[CROP], blurred[CROP].astype(np.float32)


def _bands(truth, est):
    inner = (slice(BAND, -BAND),) * 2
    border = np.ones(truth.shape, bool)
    border[inner] = False
    return psnr(truth[inner], est[inner]), psnr(truth[border], est[border])


def test_kernels_normalised_and_against_scipy():
    g = K.gaussian_kernel(1.6)
    assert g.shape == (13, 13) and g.sum() == pytest.approx(1.0)
    delta = np.zeros((13, 13))
    delta[6, 6] = 1
    np.testing.assert_allclose(g, ndimage.gaussian_filter(delta, 1.6, truncate=4.0), atol=1e-12)
    d = K.disk_kernel(3.0)
    assert d.sum() == pytest.approx(1.0) and d.shape == (7, 7)
    assert d[3, 3] == d.max() and d[0, 0] == 0.0
    assert (d / d.max()).sum() == pytest.approx(np.pi * 9, rel=0.02)  # covered area = π r²
    m = K.motion_kernel(11, 0)
    assert m.sum() == pytest.approx(1.0)
    rows = np.nonzero(m.sum(axis=1) > 1e-9)[0]
    assert len(rows) == 1  # horizontal: one row
    cols = np.nonzero(m[rows[0]] > 1e-9)[0]
    assert 11 <= len(cols) <= 12
    m90 = K.motion_kernel(11, 90)
    np.testing.assert_allclose(m90, m.T, atol=1e-9)
    # 45°: second moment along (1, -1) in (x, row) = length² / 12
    m45 = K.motion_kernel(21, 45)
    c = m45.shape[0] // 2
    yy, xx = np.mgrid[:m45.shape[0], :m45.shape[1]] - c
    along = (xx - yy) / np.sqrt(2)  # rows point down, so 45° up-right is (x, -row)
    assert np.sum(m45 * along ** 2) == pytest.approx(21 ** 2 / 12, rel=0.05)
    with pytest.raises(ValueError, match="sigma"):
        K.gaussian_kernel(0)


def test_richardson_lucy_gain_and_border(camera):
    truth, blurred = camera
    b_in, _ = _bands(truth, blurred)
    out, rep = D.deconvolve(blurred, K.gaussian_kernel(1.6), iterations=30)
    assert rep.iterations_run == 30 and not rep.stopped_early
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    r_in, r_border = _bands(truth, out)
    assert r_in - b_in >= 2.5, (b_in, r_in)
    assert r_border >= r_in - 3.0, (r_in, r_border)
    # without tapering the periodic wrap rings at the border
    periodic, _ = D.deconvolve(blurred, K.gaussian_kernel(1.6), iterations=30, taper=False)
    assert _bands(truth, periodic)[1] < r_border - 3.0


def test_wiener_gain_and_border(camera):
    truth, blurred = camera
    b_in, _ = _bands(truth, blurred)
    out, _ = D.deconvolve(blurred, K.gaussian_kernel(1.6), method="wiener", balance=0.01)
    w_in, w_border = _bands(truth, out)
    assert np.isfinite(out).all()
    assert w_in - b_in >= 2.0
    assert w_border >= w_in - 3.0


def test_stop_rule_and_regularisation_limit_noise_amplification(camera):
    """With noise, 100 plain RL iterations are worse than 30; the discrepancy stop, damping and TV
    each do better than 100 plain iterations."""
    truth, blurred = camera
    rng = np.random.default_rng(7)
    noisy = np.clip(blurred + rng.normal(0, 0.02, blurred.shape), 0, 1).astype(np.float32)
    k = K.gaussian_kernel(1.6)
    est_sigma = mad_sigma(noisy)
    assert est_sigma == pytest.approx(0.02, rel=0.25)
    p30 = _bands(truth, D.deconvolve(noisy, k, iterations=30)[0])[0]
    p100 = _bands(truth, D.deconvolve(noisy, k, iterations=100)[0])[0]
    assert p100 < p30
    out, rep = D.deconvolve(noisy, k, iterations=100, stop_rule="discrepancy")
    assert rep.stopped_early and rep.iterations_run < 100
    assert _bands(truth, out)[0] > p100
    for reg, s in (("damping", 2.0), ("tv", 0.002)):
        out, _ = D.deconvolve(noisy, k, iterations=100, regularisation=reg, strength=s)
        assert _bands(truth, out)[0] > p100, reg


def test_torch_input_colour_and_matches_skimage(camera):
    """Per-channel colour, torch in / torch out; plain periodic RL agrees with skimage's RL on the
    interior (same algorithm, different boundary handling)."""
    from skimage.restoration import richardson_lucy

    truth, blurred = camera
    rgb = torch.from_numpy(np.stack([blurred, blurred * 0.5, blurred ** 2], axis=-1))
    out, rep = D.deconvolve(rgb, K.gaussian_kernel(1.6), iterations=10)
    assert isinstance(out, torch.Tensor) and out.shape == rgb.shape
    single, _ = D.deconvolve(blurred * 0.5, K.gaussian_kernel(1.6), iterations=10)
    np.testing.assert_allclose(out[..., 1].numpy(), single, atol=1e-5)
    ours, _ = D.deconvolve(blurred, K.gaussian_kernel(1.6), iterations=10)
    ref = richardson_lucy(blurred.astype(np.float64), K.gaussian_kernel(1.6), num_iter=10, clip=True)
    inner = (slice(32, -32),) * 2
    assert psnr(ref[inner], ours[inner]) > 40


def test_deconvolve_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        D.deconvolve(np.full((32, 32), np.nan, np.float32), K.gaussian_kernel(1.0))
    with pytest.raises(ValueError, match="method"):
        D.deconvolve(np.zeros((32, 32), np.float32), K.gaussian_kernel(1.0), method="magic")
    with pytest.raises(ValueError, match="sums to zero"):
        D.deconvolve(np.zeros((32, 32), np.float32), np.zeros((3, 3)))


# --- node -----------------------------------------------------------------------------------------
def _node_args(**kw):
    args = dict(kernel_source="gaussian", method="richardson_lucy", iterations=10, regularisation="none",
                strength=0.0, stop_rule="none", wiener_balance=0.01, taper_edges=True, sigma=1.6,
                radius=3.0, motion_length=9.0, motion_angle=30.0, psf_plane="in_focus", device="cpu")
    args.update(kw)
    return args


def test_deconvolve_node(pack, camera, rng):
    from restorekit.nodes import optics

    node = optics.RestoreKitDeconvolve()
    spec = node.INPUT_TYPES()
    for key, s in {**spec["required"], **spec["optional"]}.items():
        assert "tooltip" in s[1], key
    truth, blurred = camera
    small = torch.from_numpy(blurred[:96, :128])
    rgba = torch.stack([small, small * 0.8, small * 0.6, torch.from_numpy(rng.random((96, 128)).astype(np.float32))], -1)
    batch = torch.stack([rgba, rgba.flip(1)])  # [2, 96, 128, 4]
    out, info = node.deconvolve(batch, **_node_args())
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and not torch.isnan(out).any()
    assert torch.equal(out[..., 3], batch[..., 3])  # alpha untouched
    kernel, note = K.kernel_for("gaussian", sigma=1.6)
    ref, report = D.deconvolve_images(batch[..., :3], kernel, device="cpu", iterations=10)  # the node's call
    assert torch.equal(out[..., :3], ref) and note.startswith("gaussian σ 1.6")
    assert [r.iterations_run for r in report.runs] == [10, 10] and report.device.startswith("cpu")
    direct, _ = D.deconvolve(rgba[..., :3], K.gaussian_kernel(1.6), iterations=10)
    torch.testing.assert_close(out[0, ..., :3], direct, atol=1e-5, rtol=0)

    gray = small[None, :, :, None]
    for source in ("disk", "motion"):
        o, info = node.deconvolve(gray, **_node_args(kernel_source=source, method="wiener"))
        k = K.kernel_for(source, radius=3.0, length=9.0, angle=30.0)[0]
        ref, report = D.deconvolve_images(gray, k, device="cpu", method="wiener", balance=0.01)
        assert o.shape == gray.shape and torch.equal(o, ref) and report.runs[0].balance == 0.01
    _, report = D.deconvolve_images(gray, kernel, device="cpu", iterations=10, regularisation="tv",
                                    stop_rule="discrepancy")
    assert report.strength == D.DEFAULT_STRENGTH["tv"] == 0.002  # strength 0: the default

    # PSF from the PSF node
    psf_node = optics.RestoreKitPSF()
    _, psf, _ = psf_node.make_psf(model="born_wolf", NA=1.4, wavelength=0.52, ns=1.33, ni=1.515, ni0=1.515,
                                  ng=1.515, ng0=1.515, tg=170.0, tg0=170.0, ti0=150.0, pixel_size=0.065,
                                  size=33, z_planes=5, z_step=0.2, particle_depth=0.0, focus_offset=0.0,
                                  view="max_projection", display="gamma")
    o, info = node.deconvolve(gray, **_node_args(kernel_source="psf"), psf=psf)
    assert o.shape == gray.shape
    assert K.kernel_for("psf", psf=psf)[1].startswith("microscope PSF (born_wolf, plane 2 of 5")

    with pytest.raises(ValueError, match="no psf input"):
        node.deconvolve(gray, **_node_args(kernel_source="psf"))
    with pytest.raises(ValueError, match="larger than the image"):
        node.deconvolve(gray[:, :8, :8], **_node_args(sigma=5.0))
    with pytest.raises(ValueError, match="channels"):
        node.deconvolve(torch.zeros(1, 16, 16, 2), **_node_args())


def test_deconvolve_node_memory_plan(pack, camera, monkeypatch):
    """Too little free memory: channels one at a time (same result), then a clear error."""
    from restorekit.nodes import optics
    from restorekit.scripts.inference.runtime import get_runtime

    node = optics.RestoreKitDeconvolve()
    _, blurred = camera
    g = torch.from_numpy(blurred[:64, :64])
    rgb = torch.stack([g, g * 0.5, g * 0.25], -1)[None]
    full, _ = node.deconvolve(rgb, **_node_args())
    rt = get_runtime()
    per_channel = (64 + 2 * 13 + 64) ** 2 * 4 * 12
    monkeypatch.setattr(rt, "free_memory", lambda dev: int(per_channel * 2))
    split, info = node.deconvolve(rgb, **_node_args())
    _, report = D.deconvolve_images(rgb, K.gaussian_kernel(1.6), device="cpu", iterations=10)
    assert "one channel at a time" in report.device
    torch.testing.assert_close(split, full, atol=1e-5, rtol=0)
    monkeypatch.setattr(rt, "free_memory", lambda dev: int(per_channel // 2))
    with pytest.raises(ValueError, match="free memory"):
        node.deconvolve(rgb, **_node_args())
