"""Gamut mapping into sRGB (Ottosson's methods, CSS Color 4 chroma reduction): range, hue kept,
in-gamut colours untouched, the geometry each method promises, and the cusp."""
import math

import numpy as np
import pytest
import torch

from restorekit.scripts import colour as ck
from restorekit.scripts import gamut

OTTOSSON = list(gamut.OTTOSSON_METHODS)


@pytest.fixture(scope="module")
def labs():
    """Oklab colours: a wide random cloud, L inside 0..1, chroma up to 0.45 (most out of sRGB)."""
    r = np.random.default_rng(3)
    n = 6000
    L = r.uniform(0.02, 0.98, n)
    C = r.uniform(0.0, 0.45, n)
    h = r.uniform(-math.pi, math.pi, n)
    return torch.tensor(np.stack([L, C * np.cos(h), C * np.sin(h)], -1))


def _hue_error(lab_in, srgb_out):
    out = ck.srgb_to_oklab(srgb_out.double())
    d = torch.atan2(out[:, 2], out[:, 1]) - torch.atan2(lab_in[:, 2], lab_in[:, 1])
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi, torch.hypot(out[:, 1], out[:, 2])


@pytest.mark.parametrize("method", OTTOSSON)
def test_ottosson_range_hue_and_untouched(labs, method):
    inside = gamut.in_gamut(labs)
    assert 0.1 < inside.float().mean() < 0.6  # both kinds present
    out = gamut.oklab_to_srgb_in_gamut(labs, method)
    assert out.shape == labs.shape and torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # in-gamut colours: exactly the plain conversion
    plain = ck.oklab_to_srgb(labs[inside])
    assert (out[inside] - plain).abs().max() <= 1e-12
    # mapped colours keep their hue (where the result has a hue at all)
    dh, c_out = _hue_error(labs[~inside], out[~inside])
    has_hue = c_out > 1e-3
    assert has_hue.float().mean() > 0.9
    assert dh[has_hue].abs().max() <= 1e-3
    # and land on the gamut boundary (a channel at 0 or 1)
    lin = ck.srgb_to_linear(out[~inside])
    on_edge = (lin.min(-1).values <= 1e-6) | (lin.max(-1).values >= 1 - 1e-6)
    assert on_edge.all()


@pytest.mark.parametrize("method", ["adaptive_L0_0.5", "project_to_cusp"])
def test_float32_mapping(labs, method):
    x = labs.float()
    out = gamut.oklab_to_srgb_in_gamut(x, method)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    mapped = ~gamut.in_gamut(labs)
    dh, c_out = _hue_error(labs[mapped], out[mapped])
    assert dh[c_out > 0.02].abs().max() <= 1e-3


def test_method_geometry(labs):
    out_mask = ~gamut.in_gamut(labs)
    src = labs[out_mask]
    L, C = src[:, 0], torch.hypot(src[:, 1], src[:, 2])

    def lc(method):
        m = gamut.gamut_map_oklab(src, method)
        return m[:, 0], torch.hypot(m[:, 1], m[:, 2])

    # preserve lightness: L unchanged, chroma reduced
    Lp, Cp = lc("preserve_lightness")
    assert (Lp - L).abs().max() <= 1e-9 and (Cp < C).all()
    # project to 0.5: the result lies on the segment from (0.5, 0) to (L, C)
    Lh, Ch = lc("project_to_L0.5")
    cross = (Lh - 0.5) * C - (L - 0.5) * Ch
    assert cross.abs().max() <= 1e-9 and (Ch < C).all()
    # project to cusp: on the segment from (L_cusp, 0) to (L, C)
    a_, b_ = src[:, 1] / C, src[:, 2] / C
    Lc, _ = gamut.find_cusp(a_, b_)
    Lq, Cq = lc("project_to_cusp")
    assert ((Lq - Lc) * C - (L - Lc) * Cq).abs().max() <= 1e-9
    # adaptive: L0 lies between L and 0.5 (resp. the cusp), reaching L as chroma -> 0
    L0 = gamut._choose_L0("adaptive_L0_0.5", L, C, a_, b_, 0.05)
    assert ((L0 - L) * (L0 - 0.5) <= 1e-12).all()
    L0_small = gamut._choose_L0("adaptive_L0_0.5", L, C * 1e-6, a_, b_, 0.05)
    assert (L0_small - L).abs().max() <= 1e-4
    L0c = gamut._choose_L0("adaptive_L0_cusp", L, C, a_, b_, 0.05)
    assert ((L0c - L) * (L0c - Lc) <= 1e-12).all()
    # larger alpha pulls L0 further towards 0.5
    L0_big = gamut._choose_L0("adaptive_L0_0.5", L, C, a_, b_, 0.5)
    assert ((L0_big - 0.5).abs() <= (L0 - 0.5).abs() + 1e-12).all()


def test_lightness_outside_range_maps_to_black_and_white():
    lab = torch.tensor([[1.2, 0.1, 0.0], [-0.1, 0.0, 0.1], [1.05, 0.0, 0.0]], dtype=torch.float64)
    for method in OTTOSSON:
        out = gamut.oklab_to_srgb_in_gamut(lab, method)
        assert out.min() >= 0 and out.max() <= 1
    out = gamut.oklab_to_srgb_in_gamut(lab, "preserve_lightness")
    assert torch.allclose(out[0], torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out[1], torch.zeros(3, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("deg", [0, 29.2339, 60, 110, 140, 200, 250, 264.0, 270, 300, 340])
def test_cusp_is_the_most_chromatic_colour_of_its_hue(deg):
    h = math.radians(deg)
    a_ = torch.tensor([math.cos(h)], dtype=torch.float64)
    b_ = torch.tensor([math.sin(h)], dtype=torch.float64)
    Lc, Cc = gamut.find_cusp(a_, b_)
    lab = lambda L, C: torch.stack([L, C * a_, C * b_], -1)  # noqa: E731
    # slightly inside the cusp is in gamut
    assert gamut.in_gamut(lab(Lc, Cc * 0.995), 1e-9).all()
    # no lightness gives that hue a chroma 1 % above the cusp's
    Ls = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    assert not gamut.in_gamut(lab(Ls, Cc.expand_as(Ls) * 1.01), 1e-9).any()


def test_cusp_of_red_is_srgb_red():
    red = ck.srgb_to_oklab(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    C = torch.hypot(red[1], red[2])
    Lc, Cc = gamut.find_cusp((red[1] / C)[None], (red[2] / C)[None])
    assert abs(float(Lc) - float(red[0])) <= 2e-3 and abs(float(Cc) - float(C)) <= 2e-3


def _css_reference(lab):
    """CSS Color 4 binary-search gamut mapping, written straight from the spec's pseudocode."""
    jnd, eps = 0.02, 0.0001
    L, a, b = (float(v) for v in lab)
    if L >= 1:
        return np.array([1.0, 0.0, 0.0])
    if L <= 0:
        return np.array([0.0, 0.0, 0.0])
    C, h = math.hypot(a, b), math.atan2(b, a)

    def to_lab(c):
        return np.array([L, c * math.cos(h), c * math.sin(h)])

    def inside(x):
        lin = ck.oklab_to_linear_srgb(x)
        return bool(np.all(lin >= 0) and np.all(lin <= 1))

    def clip(x):
        return ck.linear_srgb_to_oklab(np.clip(ck.oklab_to_linear_srgb(x), 0, 1))

    cur = to_lab(C)
    if inside(cur):
        return cur
    clipped = clip(cur)
    if np.linalg.norm(clipped - cur) < jnd:
        return clipped
    lo, hi, lo_in = 0.0, C, True
    while hi - lo > eps:
        chroma = (lo + hi) / 2
        cur = to_lab(chroma)
        if lo_in and inside(cur):
            lo = chroma
            continue
        clipped = clip(cur)
        e = np.linalg.norm(clipped - cur)
        if e < jnd:
            if jnd - e < eps:
                return clipped
            lo_in = False
            lo = chroma
        else:
            hi = chroma
    return clipped


def test_css_chroma_reduction_matches_spec_pseudocode(labs):
    sub = labs[:150]
    ours = gamut.gamut_map_oklab(sub, "css_chroma_reduction")
    ref = torch.tensor(np.stack([_css_reference(x) for x in sub.numpy()]))
    assert (ours - ref).abs().max() <= 1e-6
    out = gamut.oklab_to_srgb_in_gamut(labs, "css_chroma_reduction")
    assert out.min() >= 0 and out.max() <= 1
    # lightness within the JND of the original, hue within the JND-sized wiggle
    res = ck.srgb_to_oklab(out)
    assert (res[:, 0] - labs[:, 0]).abs().max() <= 0.02 + 1e-9


def test_clip_changes_hue_but_stays_in_range(labs):
    out = gamut.oklab_to_srgb_in_gamut(labs, "clip")
    assert out.min() >= 0 and out.max() <= 1
    mapped = ~gamut.in_gamut(labs)
    dh, c_out = _hue_error(labs[mapped], out[mapped])
    assert dh[c_out > 1e-3].abs().max() > 1e-2  # the comparison baseline really differs


def test_numpy_in_numpy_out_and_linear_helper(labs):
    arr = labs[:100].numpy()
    out = gamut.oklab_to_srgb_in_gamut(arr)
    assert isinstance(out, np.ndarray) and out.shape == (100, 3)
    wide = np.random.default_rng(0).uniform(-0.3, 1.4, (500, 3))
    lin = gamut.linear_srgb_in_gamut(wide)
    assert lin.min() >= 0 and lin.max() <= 1
    ok = np.all((wide >= 0) & (wide <= 1), -1)
    assert np.array_equal(lin[ok], wide[ok])


def test_bad_method():
    with pytest.raises(ValueError, match="unknown gamut mapping method"):
        gamut.gamut_map_oklab(torch.zeros(1, 3), "nearest")
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        gamut.gamut_map_oklab(torch.zeros(1, 4))


# --- in-gamut colours are never moved (issue #18 follow-up) ------------------------------------------
CORNERS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "cyan": (0, 1, 1),
           "magenta": (1, 0, 1), "yellow": (1, 1, 0), "white": (1, 1, 1), "black": (0, 0, 0)}


def _in_gamut_srgb(n=3000, seed=5):
    """sRGB ``[8 + n, 3]`` float64: the cube's corners, then random colours, half of their channels
    snapped to 0 or 1 (the surface, where rounding can push a colour outside)."""
    r = np.random.default_rng(seed)
    x = r.uniform(0.0, 1.0, (n, 3))
    x = np.where(r.uniform(size=(n, 3)) < 0.5, np.round(r.uniform(size=(n, 3))), x)
    return torch.tensor(np.concatenate([np.array(list(CORNERS.values()), dtype=np.float64), x]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", gamut.METHODS)
def test_in_gamut_colours_come_back_unchanged(method, dtype):
    from restorekit.scripts import perceptual

    x = _in_gamut_srgb()
    out = gamut.oklab_to_srgb_in_gamut(ck.srgb_to_oklab(x.to(dtype)), method)
    assert (out.double() - x).abs().max() <= 1e-4
    # the join's path: channels rounded to float32 (an IMAGE), computed in `dtype` (pure blue was
    # 0.19 off: outside by 4e-8 after the rounding, and the line to L0 leaves the gamut before blue)
    enc = perceptual.split_channels(x, "oklab").float().to(dtype)
    out, mapped = perceptual.join_channels(enc, "oklab", gamut_method=method)
    assert (out.double() - x).abs().max() <= 1e-4 and mapped == 0.0


@pytest.mark.parametrize("space", ["oklab", "jzazbz"])
@pytest.mark.parametrize("method", gamut.METHODS)
def test_in_gamut_colours_survive_split_and_join_nodes(method, space):
    from restorekit.nodes import colour as nodes

    image = _in_gamut_srgb(n=1016).float().reshape(1, 32, 32, 3)
    L, a, b, _ = nodes.RestoreKitColourSplit().split(image, space=space)
    out, _ = nodes.RestoreKitColourJoin().join(L, a, b, space=space, gamut_mapping=method)
    err = (out - image).abs().amax(-1)[0].flatten()
    assert err[:8].max() <= 1e-4, dict(zip(CORNERS, err[:8].tolist()))
    assert err.max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", OTTOSSON)
def test_out_of_gamut_colour_still_mapped_with_hue_kept(method, dtype):
    from restorekit.scripts import perceptual

    h = math.radians(150.0)
    lab = torch.tensor([[0.6, 0.35 * math.cos(h), 0.35 * math.sin(h)]], dtype=dtype)
    assert not gamut.in_gamut(lab).any()
    out = gamut.oklab_to_srgb_in_gamut(lab, method)
    assert out.min() >= 0 and out.max() <= 1
    dh, c_out = _hue_error(lab.double(), out)
    assert c_out[0] > 0.05 and dh.abs().max() <= 1e-3
    # the join's larger tolerance does not change how a real excursion is mapped
    enc = (lab + torch.tensor([0.0, 0.5, 0.5], dtype=dtype)).float().to(dtype)
    joined, mapped = perceptual.join_channels(enc, "oklab", gamut_method=method)
    assert mapped == 1.0 and (joined - out).abs().max() <= 1e-4
