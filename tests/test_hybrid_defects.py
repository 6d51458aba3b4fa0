"""Defect measurements (hybrid/defects.py), each against a synthetic case of known strength."""
import numpy as np
import pytest

from restorekit.hybrid import defects
from restorekit.hybrid.tools import damage
from restorekit.scripts import kernels


@pytest.fixture(scope="module")
def photo():
    """A clean colour photograph with flat areas, edges and neutral greys (astronaut, 256 px)."""
    return damage.load_source("astronaut", 256)


@pytest.fixture(scope="module")
def scene():
    """A noise-free synthetic scene: smooth shading, coloured and grey shapes with sharp edges, a dark
    and a light patch (black point 0.05, white point 0.95), 256 × 320 px."""
    import cv2

    h, w = 256, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.35 + 0.25 * xx / w, 0.4 + 0.2 * yy / h, 0.45 + 0.1 * (xx + yy) / (h + w)], -1)
    shapes = [((20, 20, 90, 110), (0.8, 0.3, 0.2)), ((150, 40, 240, 120), (0.2, 0.5, 0.8)),
              ((60, 180, 130, 300), (0.5, 0.5, 0.5)), ((170, 170, 230, 230), (0.05, 0.05, 0.05)),
              ((100, 130, 140, 170), (0.95, 0.95, 0.95)), ((200, 250, 250, 310), (0.3, 0.7, 0.3))]
    for (y0, x0, y1, x1), col in shapes:
        img[y0:y1, x0:x1] = col
    cv2.circle(img, (250, 60), 25, (0.7, 0.7, 0.7), -1, lineType=cv2.LINE_AA)
    return np.clip(img, 0, 1).astype(np.float32)


def _noisy(img, sigma, rng, grain_px=0.0):
    import cv2

    n = rng.normal(0, 1, img.shape[:2] + ((1,) if grain_px else (img.shape[2],))).astype(np.float32)
    if grain_px:
        n = cv2.GaussianBlur(n, (0, 0), grain_px)[..., None]
        n = n / n.std()
    return np.clip(img + sigma * n, 0, 1).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.06])
def test_white_noise_sigma_and_kind(scene, rng, sigma):
    r = defects.measure(_noisy(scene, sigma, rng))
    assert r.noise.sigma == pytest.approx(sigma, rel=0.15)
    assert r.noise.kind == "white" and abs(r.noise.rho) < 0.3
    assert r.noise.floor > 0.45  # noise puts a floor under every block


def test_film_grain_is_told_from_white_noise_and_its_psd_is_low_pass(scene, rng):
    r = defects.measure(_noisy(scene, 0.03, rng, grain_px=1.0))
    assert r.noise.kind == "grain" and r.noise.rho > 0.4
    assert r.noise.sigma == pytest.approx(0.03, rel=0.25)
    psd = r.noise.psd((64, 64), channel=0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij"))
    assert psd[f < 0.1].mean() > 4 * psd[f > 0.35].mean()  # correlated: power at low frequencies
    # bm3d convention: mean(PSD)/(M·N) is the variance of that opponent channel (mono grain: luma-like)
    assert np.sqrt(psd.mean() / 64 ** 2) == pytest.approx(r.noise.sigma_channels[0], rel=0.05)


def test_clean_images_measure_little_noise_and_no_defects(photo, scene):
    assert defects.measure(scene).noise.sigma < 0.002
    r = defects.measure(photo)
    assert r.noise.sigma < 0.012
    assert not r.motion.present
    assert r.jpeg.blockiness < 0.2
    assert r.colour.magnitude < 0.015
    assert r.seconds["total"] > 0 and set(r.seconds) >= {"features", "noise", "blur", "tone", "jpeg"}
    assert len(r.features) >= 14
    d = r.to_dict()
    assert "acf" not in d["noise"] and isinstance(d["noise"]["sigma"], float)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_width(photo, sigma):
    base = defects.measure(photo).blur.excess
    r = defects.measure(damage.blur(photo, sigma))
    assert base < 0.6
    assert r.blur.excess == pytest.approx(sigma, abs=0.35)


@pytest.mark.parametrize("kind", ["ramp", "vignette"])
@pytest.mark.parametrize("bits", [0, 8])
def test_smooth_shading_is_not_read_as_blur(kind, bits):
    """A linear ramp or a soft vignette has no edges: its gradient ratio reads tens of px, which must not
    become a deblur (the plan ran Richardson–Lucy with σ 16 px on a plain ramp before the cap)."""
    from restorekit.hybrid import plan

    yy, xx = np.mgrid[0:160, 0:200].astype(np.float32)
    if kind == "ramp":
        img = np.stack([xx / 200, 0.1 + 0.8 * yy / 160, 0.5 + 0 * xx], -1)
    else:
        r2 = ((yy - 80) ** 2 + (xx - 100) ** 2) / 100.0 ** 2
        img = np.repeat((0.8 * np.exp(-r2))[..., None], 3, -1)
    img = img.astype(np.float32)
    if bits:  # as read back from an 8-bit file: the steps must not read as edges either
        img = (np.round(img * 255) / 255).astype(np.float32)
    r = defects.measure(img)
    assert r.blur.excess == 0.0
    out, ex = plan.execute(img, plan.plan_from_rules(r))
    assert ex.unchanged and np.array_equal(out, img)


def test_motion_length_angle_and_confidence(photo):
    import cv2

    k = kernels.motion_kernel(9.0, 30.0).astype(np.float32)
    r = defects.measure(cv2.filter2D(photo, -1, k, borderType=cv2.BORDER_REFLECT))
    assert r.motion.present and r.motion.confidence >= defects.MOTION_MIN_CONFIDENCE
    assert r.motion.length == pytest.approx(9.0, abs=1.0)
    assert abs((r.motion.angle - 30.0 + 90) % 180 - 90) < 4.0
    assert not defects.measure(photo).motion.present


def test_black_white_point_and_contrast_of_a_fade(scene):
    clean = defects.measure(scene).tone
    assert clean.black_point == pytest.approx(0.05, abs=0.01) and clean.white_point == pytest.approx(0.95, abs=0.01)
    faded = defects.measure(0.25 + 0.6 * scene).tone  # a fade to 0.25..0.85
    assert faded.black_point == pytest.approx(0.28, abs=0.01)
    assert faded.white_point == pytest.approx(0.82, abs=0.01)
    assert faded.contrast == pytest.approx(0.6 * clean.contrast, abs=0.02)


@pytest.mark.parametrize("da, db", [(0.0, 0.04), (0.03, -0.02)])
def test_colour_cast_in_oklab(scene, da, db):
    from restorekit.scripts.colour import oklab_to_srgb, srgb_to_oklab

    grey = np.repeat(scene.mean(axis=-1, keepdims=True), 3, axis=-1)  # all neutral: no cast
    assert defects.measure(grey).colour.magnitude < 0.002
    lab = np.asarray(srgb_to_oklab(scene.astype(np.float64)))
    base = defects.measure(scene).colour
    lab[..., 1] += da
    lab[..., 2] += db
    cast = defects.measure(np.clip(oklab_to_srgb(lab), 0, 1).astype(np.float32)).colour
    assert cast.cast_a - base.cast_a == pytest.approx(da, abs=0.005)
    assert cast.cast_b - base.cast_b == pytest.approx(db, abs=0.005)


def test_uneven_illumination_in_stops(rng):
    import cv2

    tex = cv2.GaussianBlur(rng.uniform(0.3, 0.9, (256, 320, 1)).astype(np.float32), (0, 0), 2)[..., None]
    tex = np.repeat(tex, 3, axis=-1)  # a uniformly lit texture
    assert defects.measure(tex).illumination.variation_stops < 0.2
    ramp = np.linspace(1.0, 0.5, 320, dtype=np.float32)[None, :, None]  # one stop, left to right
    assert defects.measure(tex * ramp).illumination.variation_stops == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("quality, lo, hi", [(30, 0.35, 5.0), (95, -1.0, 0.2)])
def test_jpeg_blockiness(photo, quality, lo, hi):
    assert lo < defects.measure(damage.jpeg(photo, quality)).jpeg.blockiness < hi


def test_no_blockiness_without_jpeg(scene, rng):
    assert abs(defects.measure(_noisy(scene, 0.02, rng)).jpeg.blockiness) < 0.1


def test_greyscale_and_uint8_inputs(photo, scene, rng):
    grey = _noisy(scene.mean(axis=-1, keepdims=True), 0.03, rng)
    r = defects.measure(grey)
    assert r.channels == 1 and r.colour is None
    assert r.noise.sigma == pytest.approx(0.03, rel=0.2)
    u8 = np.round(photo * 255).astype(np.uint8)
    assert defects.measure(u8).tone.white_point == pytest.approx(defects.measure(photo).tone.white_point, abs=0.01)


def test_out_of_range_floats_are_refused_not_clipped(photo):
    with pytest.raises(ValueError, match="0..255 values"):
        defects.measure(photo * 255)
    with pytest.raises(ValueError, match="NaN"):
        defects.measure(np.where(photo > 0.5, np.nan, photo))
    with pytest.raises(ValueError, match="at least 16"):
        defects.measure(photo[:8, :8])
