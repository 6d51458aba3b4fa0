"""The deconvolution FFT fast path (scripts/deconvolution.py): the PSF's transform and its conjugate
are computed once, the spectrum product is formed in place, and torch.fft or scipy.fft is chosen by
measurement per grid -- checked here against the straightforward convolution and against each other."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from restorekit.scripts import deconvolution as D
from restorekit.scripts import kernels as K


def _blurred(h=300, w=280, seed=0):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((h, w, 3)), (2, 2, 0)).astype(np.float32)
    return np.stack([ndimage.gaussian_filter(img[..., i], 1.5) for i in range(3)], -1).astype(np.float32)


def test_convolver_equals_the_plain_fft_convolution():
    k = K.gaussian_kernel(2.0)
    conv = D._Convolver(k, (96, 80), "cpu", channels=3, backend="torch")
    x = torch.rand(3, 96, 80, generator=torch.Generator().manual_seed(1))
    for adjoint in (False, True):
        otf = conv.otf.conj() if adjoint else conv.otf
        ref = torch.fft.irfft2(torch.fft.rfft2(x) * otf, s=(96, 80))
        assert torch.equal(conv(x, adjoint=adjoint), ref)
        # and the convolution itself is right: scipy's circular convolution (wrap) with the kernel
        direct = np.stack([ndimage.convolve(x[i].numpy().astype(np.float64),
                                            k[::-1, ::-1] if adjoint else k, mode="wrap") for i in range(3)])
        assert np.abs(conv(x, adjoint=adjoint).numpy() - direct).max() < 1e-5


@pytest.mark.parametrize("method", ["richardson_lucy", "wiener"])
def test_scipy_and_torch_backends_agree(method):
    b = _blurred()
    k = K.gaussian_kernel(1.5)
    ref, r1 = D.deconvolve(b, k, method=method, iterations=30, fft="torch")
    out, r2 = D.deconvolve(b, k, method=method, iterations=30, fft="scipy")
    assert r1.fft.startswith("torch") and r2.fft.startswith("scipy")
    assert np.abs(out - ref).max() <= 1e-4  # 30 RL iterations of float32 FFTs by two libraries
    auto, r3 = D.deconvolve(b, k, method=method, iterations=30)
    assert r3.fft.startswith(("torch", "scipy"))
    assert np.abs(auto - ref).max() <= 1e-4


def test_backend_choice_is_measured_once_per_grid(monkeypatch):
    monkeypatch.setattr(D, "_FFT_CHOICE", {})
    assert D.fft_backend((1, 64, 64), "cpu")[1] == "torch.fft (grid too small to measure)"
    backend, why = D.fft_backend((1, 512, 384), "cpu")
    assert backend in ("torch", "scipy") and "relative difference" in why
    assert D.fft_backend((1, 512, 384), "cpu") == (backend, why) and len(D._FFT_CHOICE) == 1
    monkeypatch.setattr(D, "FFT_TOLERANCE", -1.0)  # a backend outside the tolerance is never chosen
    monkeypatch.setattr(D, "_FFT_CHOICE", {})
    assert D.fft_backend((1, 512, 384), "cpu")[0] == "torch"
