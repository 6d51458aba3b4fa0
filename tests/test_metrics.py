"""scripts/metrics.py against scikit-image's reference implementations and the cap policy."""
import numpy as np
import pytest

from restorekit.scripts import metrics


def test_psnr_matches_skimage_and_caps_identical_images(rng):
    from skimage.metrics import peak_signal_noise_ratio

    a = rng.random((33, 47, 3))
    b = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    assert metrics.psnr(a, a) == pytest.approx(metrics.PSNR_CAP_DB) == pytest.approx(100.0)
    assert metrics.psnr(a * 255, b * 255, data_range=255) == pytest.approx(metrics.psnr(a, b), abs=1e-9)


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3), (13, 11, 1)])
def test_ssim_matches_skimage(rng, shape):
    from skimage.metrics import structural_similarity

    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    kw = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if len(shape) == 3:
        kw["channel_axis"] = -1
    ref = structural_similarity(a, b, **kw)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-4)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
