"""The colour nodes' float32 fast path (scripts/perceptual.py choose_dtype): chosen only where it is
measured faster and within FLOAT32_TOLERANCE of the float64 reference on a sample of the image; the
bound must then hold on every pixel, not only the sample."""
import numpy as np
import pytest
import torch

from restorekit.scripts import perceptual


@pytest.fixture(scope="module")
def big():
    """A 1024x640 photograph (above the size the check starts at) with saturated patches added, so
    gamut mapping has work to do."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (1024, 640), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    img[:64, :64] = (1.0, 0.0, 0.0)
    img[:64, 64:128] = (0.0, 0.0, 1.0)
    img[64:128, :64] = (0.0, 1.0, 1.0)
    t = torch.from_numpy(img)[None]
    assert t[0].numel() // 3 >= perceptual.CHECK_MIN_PIXELS
    return t


CASES = [("oklch", "adaptive_L0_0.5"), ("jzczhz", "adaptive_L0_cusp"), ("jzczhz", "project_to_cusp")]


@pytest.mark.parametrize("space,method", CASES)
def test_adjust_fast_path_within_the_tolerance_everywhere(big, space, method):
    args = (space, 0.2, 1.8, 25.0, 0.3, 0.2, -0.1, method)
    ref, rep_ref = perceptual.adjust_image(big, *args, precision="fp64")
    fast, rep_fast = perceptual.adjust_image(big, *args, precision="fp32")
    auto, rep_auto = perceptual.adjust_image(big, *args)
    assert rep_ref.mapped > 0.01  # gamut mapping was exercised
    assert float((fast - ref).abs().max()) <= perceptual.FLOAT32_TOLERANCE
    assert rep_auto.precision.startswith(("float32", "float64")), rep_auto.precision
    # auto returns exactly one of the two paths
    assert torch.equal(auto, fast if rep_auto.precision.startswith("float32") else ref)
    assert abs(rep_fast.mapped - rep_ref.mapped) < 1e-3


def test_near_the_gamut_boundary_within_the_tolerance(big):
    """Primaries pushed just outside the gamut: the hardest case measured for float32."""
    for space, kw in (("oklch", {"temperature": 0.01}), ("jzczhz", {"chroma": 1.01})):
        for method in ("preserve_lightness", "project_to_cusp"):
            ref, _ = perceptual.adjust_image(big, space, gamut_method=method, precision="fp64", **kw)
            fast, _ = perceptual.adjust_image(big, space, gamut_method=method, precision="fp32", **kw)
            assert float((fast - ref).abs().max()) <= perceptual.FLOAT32_TOLERANCE, (space, kw, method)


def test_split_join_fast_path_within_the_tolerance(big):
    for space in ("oklab", "jzazbz"):
        ref, _ = perceptual.split_image(big, space, precision="fp64")
        fast, rep = perceptual.split_image(big, space, precision="fp32")
        for r, f in zip(ref, fast):
            assert float((f - r).abs().max()) <= perceptual.FLOAT32_TOLERANCE
        # pure blue after a split and join sits on the gamut's surface (redone in float64)
        back_ref, _ = perceptual.join_images(*ref, space, precision="fp64")
        back, rep = perceptual.join_images(*ref, space, precision="fp32")
        assert float((back - back_ref).abs().max()) <= perceptual.FLOAT32_TOLERANCE


def test_auto_keeps_float64_outside_the_tolerance_and_for_small_images(big, monkeypatch):
    monkeypatch.setattr(perceptual, "FLOAT32_TOLERANCE", 0.0)
    monkeypatch.setattr(perceptual, "_SLOWER", {})  # measure again
    args = ("oklch", 0.0, 1.6, 15.0)
    ref, _ = perceptual.adjust_image(big, *args, precision="fp64")
    out, rep = perceptual.adjust_image(big, *args)
    assert rep.precision.startswith("float64 (float32 outside the tolerance"), rep.precision
    assert torch.equal(out, ref)
    small = big[:, :100, :100]
    _, rep = perceptual.adjust_image(small, *args)
    assert "too small" in rep.precision
    with pytest.raises(ValueError, match="precision"):
        perceptual.adjust_image(small, *args, precision="fp16")


def test_every_gamut_method_within_the_tolerance(big):
    for method in ("css_chroma_reduction", "clip", "preserve_lightness"):
        args = ("oklch", 0.2, 1.8, 25.0, 0.3, 0.2, -0.1, method)
        ref, _ = perceptual.adjust_image(big, *args, precision="fp64")
        fast, _ = perceptual.adjust_image(big, *args, precision="fp32")
        assert float((fast - ref).abs().max()) <= perceptual.FLOAT32_TOLERANCE, method
    # project_to_L0.5 is not (measured 1.3e-3): auto keeps it in float64
    args = ("oklch", 0.2, 1.8, 25.0, 0.3, 0.2, -0.1, "project_to_L0.5")
    ref, _ = perceptual.adjust_image(big, *args, precision="fp64")
    auto, rep = perceptual.adjust_image(big, *args)
    assert torch.equal(auto, ref) and rep.precision.startswith("float64 (project_to_L0.5"), rep.precision


def test_a_slower_float32_is_not_measured_again(big, monkeypatch):
    """Where float32 measured slower, later images of the same work skip the check (float64)."""
    monkeypatch.setattr(perceptual, "_SLOWER", {})
    calls = []

    def timed(fn, x, device):  # float32 takes twice float64's time
        calls.append(x.dtype)
        return fn(x), 1.0 if x.dtype == torch.float32 else 0.5

    monkeypatch.setattr(perceptual, "_timed", timed)
    args = ("oklch", 0.0, 1.2, 10.0)
    _, rep = perceptual.adjust_image(big, *args)
    assert rep.precision.startswith("float64 (float32 not faster") and len(calls) == 4, rep.precision
    _, rep = perceptual.adjust_image(big, *args)
    assert "earlier image in this process" in rep.precision and len(calls) == 4
    _, rep = perceptual.adjust_image(big, "jzczhz", 0.0, 1.2, 10.0)  # other work: measured
    assert len(calls) == 8
