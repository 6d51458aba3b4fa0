"""Smart sharpening on a σ1.5 step edge plus a noisy flat patch (targets in REFERENCES.md,
Sharpening: overshoot ≤ 2 %, flat-area noise gain ≤ 1.2×, 10–90 % edge width −30 %)."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from restorekit.scripts import sharpen as sh
from restorekit.scripts.batch import map_images, read_images

LO, HI = 0.2, 0.8


def _scene(noise_everywhere: bool, seed=1):
    """96×128: left half a vertical step 0.2→0.8 blurred by a Gaussian σ 1.5 px, right half a flat
    0.5 patch; Gaussian noise σ 0.02 on the patch (or on everything)."""
    rng = np.random.default_rng(seed)
    prof = gaussian_filter1d(np.where(np.arange(64) < 32, LO, HI), 1.5, mode="nearest")
    img = np.full((96, 128), 0.5)
    img[:, :64] = prof[None]
    n = rng.normal(0, 0.02, img.shape)
    if noise_everywhere:
        img = img + n
    else:
        img[:, 64:] += n[:, 64:]
    return img


def _width(profile):
    lo, hi = profile[:8].mean(), profile[-8:].mean()
    t = (profile - lo) / (hi - lo)
    x = np.arange(len(profile))
    return np.interp(0.9, t, x) - np.interp(0.1, t, x)


def _measure(img, out):
    p_in, p_out = img[:, :64].mean(0), out[:, :64].mean(0)
    overshoot = max(p_out.max() - HI, LO - p_out.min(), 0.0) / (HI - LO)
    gain = out[8:-8, 72:-8].std() / img[8:-8, 72:-8].std()
    return overshoot, gain, _width(p_out) / _width(p_in)


def test_reference_scene_auto():
    img = _scene(False)
    out, rep = sh.sharpen(img)
    overshoot, gain, width = _measure(img, out)
    # the clean edge: no pixel of any row overshoots more than 2 %
    rows = out[:, :64]
    assert max(rows.max() - HI, LO - rows.min()) / (HI - LO) <= 0.02
    assert overshoot <= 0.02 and gain <= 1.2 and width <= 0.7, (overshoot, gain, width)
    assert rep.blur_sigma is not None and abs(rep.blur_sigma - 1.5) < 0.3  # gradient-ratio estimate


def test_reference_scene_given_noise_and_noise_everywhere():
    img = _scene(False)
    o, g, w = _measure(img, sh.sharpen(img, noise_sigma=0.02)[0])
    assert o <= 0.02 and g <= 1.2 and w <= 0.7, (o, g, w)
    img = _scene(True)
    out, rep = sh.sharpen(img)
    o, g, w = _measure(img, out)
    assert abs(rep.noise_sigma - 0.02) < 0.004
    assert o <= 0.02 and g <= 1.2 and w <= 0.7, (o, g, w)


def test_plain_usm_fails_the_targets():
    """The scene can fail: plain USM (σ2, amount 1, no clamp/threshold) overshoots and boosts noise."""
    img = _scene(False)
    out, _ = sh.sharpen(img, amount=1.0, radius=2.0, threshold=0.0, edge_adaptive=False, halo=-1)
    o, g, w = _measure(img, out)
    assert o > 0.05 and g > 1.5 and w < 0.75


def test_blur_estimate_tracks_sigma():
    for s in (1.0, 2.0, 3.0):
        prof = gaussian_filter1d(np.where(np.arange(96) < 48, 0.1, 0.9), s, mode="nearest")
        est = sh.estimate_blur_sigma(np.tile(prof, (32, 1)))
        assert abs(est - s) < 0.25 * s, (s, est)
    assert sh.estimate_blur_sigma(np.full((32, 32), 0.5)) is None


def test_oklab_keeps_hue():
    from restorekit.scripts.colour import srgb_to_oklab

    img = np.zeros((48, 64, 3))
    img[:, :32] = [0.7, 0.3, 0.2]
    img[:, 32:] = [0.2, 0.3, 0.6]
    img = np.stack([gaussian_filter1d(img[..., c], 1.5, axis=1, mode="nearest") for c in range(3)], -1)
    out, rep = sh.sharpen(img, space="oklab")
    assert rep.space == "oklab"
    lab_in, lab_out = srgb_to_oklab(img), srgb_to_oklab(np.clip(out, 0, 1))
    hue_in = np.arctan2(lab_in[..., 2], lab_in[..., 1])
    hue_out = np.arctan2(lab_out[..., 2], lab_out[..., 1])
    far = np.abs(np.arange(64) - 32) > 6  # away from the edge, colours untouched
    assert np.allclose(out[:, far], img[:, far], atol=1e-6)
    assert np.max(np.abs(np.angle(np.exp(1j * (hue_out - hue_in))))) < 0.05
    assert not np.allclose(out, img)


@pytest.mark.parametrize("bad", ["constant", "tiny", "uint16", "two_px"])
def test_bad_input_library(bad):
    x = {"constant": np.full((32, 32, 3), 0.4), "tiny": np.full((1, 1, 3), 0.4),
         "uint16": np.random.default_rng(0).random((32, 32)) * 65535, "two_px": np.random.default_rng(0).random((2, 5))}[bad]
    out, _ = sh.sharpen(x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    if bad == "constant":
        assert np.allclose(out, 0.4, atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        sh.sharpen(np.full((8, 8), np.nan))


# --- node ---------------------------------------------------------------------------------------
def _node():
    from restorekit.nodes.sharpen import RestoreKitSmartSharpen

    return RestoreKitSmartSharpen()


@pytest.mark.parametrize("c", [1, 3, 4])
def test_node_batch_channels(c):
    img = _scene(True)[:48, :64]
    rgb = np.repeat(img[..., None], 3, axis=2) * np.array([1.0, 0.9, 0.8])
    planes = {1: img[..., None], 3: rgb, 4: np.concatenate([rgb, np.random.default_rng(0).random((48, 64, 1))], 2)}[c]
    x = torch.from_numpy(np.stack([planes, planes[::-1]]).astype(np.float32))
    out, info = _node().sharpen(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    if c == 4:
        assert torch.equal(out[..., 3], x[..., 3])
    ref, report = map_images(x, sh.sharpen, what="Smart Sharpen")  # the node's library call, all automatic
    assert torch.equal(out, ref) and len(report.items) == 2
    for r in report.items:
        assert r.space == ("grey" if c == 1 else "oklab") and r.amount > 0 and r.radius > 0
    assert not torch.allclose(out, x)


def test_node_bad_input():
    node = _node()
    with pytest.raises(ValueError, match="NaN"):
        node.sharpen(torch.full((1, 8, 8, 3), float("nan")))
    for img in (torch.rand(1, 1, 1, 3), torch.full((1, 16, 16, 3), 0.5), torch.rand(1, 16, 16, 3) * 65535):
        out, info = node.sharpen(img)
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert read_images(img)[1].scale == 65535  # the 16-bit input was rescaled, not clipped


def test_blur_estimate_ignores_smooth_shading_but_not_an_edge_on_it():
    """A ramp's gradient barely changes with scale (it read as a 20 px blur); bars on the same ramp
    (a printed page on uneven light) are still measured."""
    ramp = np.tile(np.linspace(0.1, 0.9, 128), (64, 1))
    assert sh.estimate_blur_sigma(ramp) is None
    assert sh.estimate_blur_sigma(np.round(ramp * 255) / 255) is None
    edge = ramp + gaussian_filter1d(np.where(np.arange(128) % 32 < 16, 0.0, 0.3), 1.5, mode="nearest")
    assert abs(sh.estimate_blur_sigma(edge) - 1.5) < 0.4
