"""Classical denoisers (NLM, bilateral, wavelet, TV) and automatic noise estimation."""
import numpy as np
import pytest
import torch

from functools import partial

from restorekit.scripts import denoise as dn
from restorekit.scripts import noise
from restorekit.scripts.batch import map_images, read_images


def _mse(a, b):
    return float(np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def images():
    from skimage import data

    rgb = data.astronaut()[100:228, 150:278].astype(np.float64) / 255
    grey = data.camera()[100:228, 150:278].astype(np.float64) / 255
    return {"rgb": rgb, "grey": grey}


@pytest.mark.parametrize("kind", ["rgb", "grey"])
@pytest.mark.parametrize("method", dn.METHODS)
def test_each_method_reduces_error(images, kind, method):
    clean = images[kind]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.07, clean.shape), 0, 1)
    out, rep = dn.denoise(noisy, method)
    assert out.shape == clean.shape and np.all(np.isfinite(out))
    assert rep.method == method and rep.sigma_source.startswith("estimated") and 0.05 < rep.sigma < 0.09
    # at least 30 % lower squared error than the noisy input (≈ +1.5 dB)
    assert _mse(out, clean) < 0.7 * _mse(noisy, clean), (method, _mse(out, clean), _mse(noisy, clean))


@pytest.mark.parametrize("sigma", [0.03, 0.06, 0.1])
@pytest.mark.parametrize("estimator", ["skimage", "mad"])
def test_auto_sigma_sane(images, sigma, estimator):
    clean = images["grey"]
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)  # not clipped
    est = noise.estimate_noise_sigma(noisy, estimator)
    assert 0.8 * sigma < est < 1.25 * sigma, (sigma, est)


def test_mad_matches_skimage_on_pure_noise():
    from skimage.restoration import estimate_sigma

    z = 0.5 + 0.05 * np.random.default_rng(2).standard_normal((256, 256))
    assert abs(noise.mad_sigma(z) - estimate_sigma(z)) < 0.003
    assert abs(noise.mad_sigma(z) - 0.05) < 0.003
    assert noise.mad_sigma(torch.from_numpy(z)) == noise.mad_sigma(z)  # torch input: the same estimator


def test_given_sigma_used_and_bad_input():
    z = np.full((32, 32), 0.4)
    out, rep = dn.denoise(z, "tv", sigma=0.05)
    assert rep.sigma == 0.05 and rep.sigma_source == "given" and np.allclose(out, 0.4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown denoise method"):
        dn.denoise(z, "median")
    with pytest.raises(ValueError, match="NaN"):
        dn.denoise(np.full((8, 8), np.nan), "tv")
    with pytest.raises(ValueError, match="expected"):
        dn.denoise(np.zeros((8, 8, 2)), "tv")
    one, _ = dn.denoise(np.full((1, 1, 3), 0.2), "nlm")  # 1x1: unchanged, no NaN
    assert one.shape == (1, 1, 3) and np.allclose(one, 0.2)


# --- node ---------------------------------------------------------------------------------------
def _node():
    from restorekit.nodes.denoise import RestoreKitDenoise

    return RestoreKitDenoise()


@pytest.mark.parametrize("method", ["nlm", "bilateral", "wavelet", "tv"])
def test_node_batch_rgba_grey(method):
    rng = np.random.default_rng(3)
    base = np.linspace(0, 1, 40 * 40 * 3).reshape(40, 40, 3).astype(np.float32)
    rgba = np.stack([np.concatenate([np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1),
                                     rng.random((40, 40, 1))], axis=2) for _ in range(2)]).astype(np.float32)
    x = torch.from_numpy(rgba)
    out, info = _node().denoise(x, method=method)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out[..., 3], x[..., 3])
    assert 0 <= float(out.min()) and float(out.max()) <= 1 and torch.isfinite(out).all()
    ref, report = map_images(x, partial(dn.denoise, method=method), what="Classical Denoise")  # the node's call
    assert torch.equal(out, ref) and report.input.images == 2
    assert all(r.method == method and r.sigma_source.startswith("estimated") for r in report.items)
    g = x[:1, :, :, :1]
    out_g, info_g = _node().denoise(g, method=method, sigma=0.05)
    ref, report = map_images(g, partial(dn.denoise, method=method, sigma=0.05), what="Classical Denoise")
    assert out_g.shape == g.shape and torch.equal(out_g, ref) and report.item.sigma_source == "given"
    err_in = float(((g[..., 0] - torch.from_numpy(base[None, :, :, 0])) ** 2).mean())
    err_out = float(((out_g[..., 0] - torch.from_numpy(base[None, :, :, 0])) ** 2).mean())
    assert err_out < err_in


def test_node_bad_input():
    node = _node()
    with pytest.raises(ValueError, match="NaN"):
        node.denoise(torch.full((1, 8, 8, 3), float("nan")))
    for img in (torch.rand(1, 1, 1, 3), torch.full((1, 16, 16, 1), 0.7), torch.rand(1, 16, 16, 3) * 65535):
        out, info = node.denoise(img, method="nlm")
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert read_images(img)[1].scale == 65535  # the 16-bit input was rescaled, not clipped
