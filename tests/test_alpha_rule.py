"""One alpha rule for every image node (README, *Alpha*): the 4th channel is never processed; it is
clipped to 0..1 and otherwise returned unchanged (size-changing nodes resize it: test_model_nodes.py)."""
import pytest
import torch

from restorekit.nodes import colour, contrast, denoise, frequency, hybrid, optics, sharpen

DECONV = dict(method="wiener", iterations=5, regularisation="none", strength=0.0, stop_rule="none",
              wiener_balance=0.01, taper_edges=True)

#: (name, call(image) -> output image with alpha, whether the node reads values > 1 as 8/16-bit data)
NODES = [
    ("LB-CLAHE", lambda x: contrast.RestoreKitLBCLAHE().enhance(x, "Oklab L", 2.0, 4)[0], True),
    ("Retinex", lambda x: contrast.RestoreKitRetinex().enhance(x, "MSRCR", "5, 20")[0], True),
    ("Film grain", lambda x: denoise.RestoreKitFilmGrainBM3D().denoise(x, method="fallback")[0], True),
    ("Denoise", lambda x: denoise.RestoreKitDenoise().denoise(x, "bilateral")[0], True),
    ("Sharpen", lambda x: sharpen.RestoreKitSmartSharpen().sharpen(x)[0], True),
    ("Frequency enhance", lambda x: frequency.RestoreKitFrequencyEnhance().enhance(x, device="cpu")[0], True),
    ("Frequency separate", lambda x: frequency.RestoreKitFrequencySeparate().separate(x, device="cpu")[1], True),
    ("Perceptual adjust", lambda x: colour.RestoreKitPerceptualAdjust().adjust(x, chroma=1.2, device="cpu")[0], False),
    ("Colour split", lambda x: colour.RestoreKitColourSplit().split(x, device="cpu")[0], False),
    ("Deconvolve", lambda x: optics.RestoreKitDeconvolve().deconvolve(
        x, "gaussian", sigma=1.0, radius=2.0, motion_length=5.0, motion_angle=0.0, device="cpu", **DECONV)[0], False),
    ("Motion deblur", lambda x: optics.RestoreKitMotionDeblur().deblur(
        x, max_length=8.0, length_override=5.0, angle_override=0.0, device="cpu", **DECONV)[0], False),
    ("Hybrid restore", lambda x: hybrid.RestoreKitHybridRestore().restore(x, "classical", 45.0, 26.25, "cpu")[0], False),
]


@pytest.mark.parametrize("name,call,scales", NODES, ids=[n[0] for n in NODES])
def test_alpha_clipped_and_passed_through(name, call, scales):
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 40, 48, 3, generator=g)
    # nodes that read values > 1 as 8/16-bit data would rescale the whole image: only go below 0 there
    alpha = torch.rand(2, 40, 48, 1, generator=g) * (1.4 if scales else 2.0) - 0.4
    out = call(torch.cat([rgb, alpha], -1))
    assert out.shape[-1] == 4 and out.shape[:3] == (2, 40, 48)
    assert torch.equal(out[..., 3:], alpha.clamp(0.0, 1.0)), name
    # and an alpha inside 0..1 comes back bit for bit
    inside = alpha.clamp(0.0, 1.0)
    assert torch.equal(call(torch.cat([rgb, inside], -1))[..., 3:], inside), name
