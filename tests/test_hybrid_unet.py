"""The hybrid U-Net (hybrid/unet.py): input statistics, both weight layouts, the tone augmentation."""
import os

import numpy as np
import pytest
import torch

from restorekit.hybrid import unet
from restorekit.hybrid.tools import damage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_input_statistics_match_numpy(rng):
    x = rng.random((2, 3, 90, 70)).astype(np.float32) ** 2  # skewed, so quantiles differ from the mean
    got = unet.input_statistics(torch.from_numpy(x)).numpy()
    k = len(unet.STAT_QUANTILES)
    assert got.shape == (2, 3 * (k + 2))
    flat = x.reshape(2, 3, -1)
    ref_q = np.quantile(flat, unet.STAT_QUANTILES, axis=2)  # [k, 2, 3], linear interpolation
    # nearest order statistic vs numpy's interpolation: within one sample spacing of 6300 values
    np.testing.assert_allclose(got[:, : 3 * k].reshape(2, 3, k), ref_q.transpose(1, 2, 0), atol=2e-3)
    np.testing.assert_allclose(got[:, 3 * k: 3 * k + 3], flat.mean(2), rtol=1e-5)
    np.testing.assert_allclose(got[:, 3 * k + 3:], flat.std(2), rtol=2e-5)  # population std


def test_input_statistics_subsample_large_images_and_keep_the_dtype(rng):
    x = torch.from_numpy(rng.random((1, 3, 600, 500)).astype(np.float32))
    full = unet.input_statistics(x)
    # a strided subsample of ~65k of the 300k pixels: uniform data, so the estimates stay close
    np.testing.assert_allclose(full[0, :15].reshape(3, 5).mean(0).numpy(), unet.STAT_QUANTILES, atol=0.01)
    assert unet.input_statistics(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_fading_moves_the_statistics_the_colour_branch_reads():
    clean = damage.load_source("astronaut", 128)
    faded = damage.fade(clean, 0.3)
    yellowed = damage.yellow(clean, 0.3)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    s_c, s_f, s_y = (unet.input_statistics(t(a))[0].reshape(-1) for a in (clean, faded, yellowed))
    k = len(unet.STAT_QUANTILES)
    black = slice(0, 3 * k, k)  # the 1 % quantile of R, G, B
    assert torch.all(s_f[black] > s_c[black] + 0.1)  # fading lifts the black point
    blue_median = 2 * k + 2
    assert s_y[blue_median] < s_c[blue_median] - 0.05  # yellowing absorbs blue


@pytest.mark.parametrize("stats", [True, False])
def test_both_weight_layouts_load_strictly_with_their_own_layout(tmp_path, stats):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = unet.RestoreUNet(base=4, stats=stats)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = os.path.join(tmp_path, "u.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
    h = unet.load_unet_file(path)
    assert h.module.stats == stats and h.module.base == 4
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(h.module(x), m(x))


def test_a_fresh_unet_is_the_identity():
    """Zero-initialised colour and residual heads: training starts from "leave the image alone"."""
    x = torch.rand(2, 3, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(unet.RestoreUNet(base=4)(x), x)


def test_vary_tone_is_a_monotone_grey_mapping_inside_its_range(rng):
    img = damage.load_source("coffee", 64)
    for seed in range(5):
        out = damage.vary_tone(img, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
        # the same monotone curve on every channel: the order of values is kept, no cast is added
        flat_in, flat_out = img.reshape(-1), out.reshape(-1)
        order = np.argsort(flat_in, kind="stable")
        assert np.all(np.diff(flat_out[order]) >= -1e-6)
        grey = np.full((4, 4, 3), 0.5, np.float32)
        g = damage.vary_tone(grey, np.random.default_rng(seed))
        assert np.ptp(g) < 1e-6
    r = np.random.default_rng(3)
    out = damage.vary_tone(np.zeros((2, 2, 3), np.float32), r)
    assert 0.0 <= out.min() <= 0.2  # black goes to the black point lo ~ U(0, 0.2)
