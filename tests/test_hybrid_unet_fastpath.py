"""The hybrid U-Net through the runner's fast paths (hybrid/unet.py run): a reduced-precision copy
only within the stated REDUCED_TOLERANCE of fp32 -- checked here on the whole image, not only the
probe tile -- and the loaded model unchanged."""
import numpy as np
import pytest
import torch

from restorekit.hybrid import unet
from restorekit.scripts.inference import fastpath


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:256, 64:448].astype(np.float32) / 255.0)


def test_unet_reduced_precision_within_the_stated_tolerance(photo, one_torch_thread):
    handle = unet.load_shipped()
    before = {k: v.clone() for k, v in handle.module.state_dict().items()}
    ref, rep_ref = unet.run(handle, photo, device="cpu", precision="fp32")
    assert rep_ref.precision == "fp32"
    tol_mean, tol_p999 = unet.REDUCED_TOLERANCE
    assert handle.reduced_tolerance == unet.REDUCED_TOLERANCE
    bf, rep = unet.run(handle, photo, device="cpu", precision="bf16")
    assert rep.precision == "bf16"
    d = np.abs(bf - ref).ravel()
    assert d.mean() <= tol_mean and np.quantile(d, 0.999) <= tol_p999, (d.mean(), np.quantile(d, 0.999))
    out, rep = unet.run(handle, photo, device="cpu")  # auto
    assert rep.precision in ("fp32", "bf16") and rep.fast_path
    if rep.precision == "bf16":
        assert fastpath.native_bf16_cpu() and "within" in rep.fast_path, rep.fast_path
        assert np.array_equal(out, bf)
    else:
        assert np.array_equal(out, ref)
    after = handle.module.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items())
