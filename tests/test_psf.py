"""Microscope PSF (scripts/psf.py) against microscpsf-py and psfmodels, and the PSF node.

Reference parameter sets (../shared/REFERENCES.md, Optics): λ 0.6 µm, oil immersion ni 1.515;
NA 1.4 with matched indices → lateral / axial FWHM 222 / 591 nm; NA 1.2 with ns 1.33 (particle at
the coverslip) → 258 / 911 nm, in both reference libraries.  microscpsf-py's zv = −z (opposite
convention), psfmodels uses ours.
"""
import numpy as np
import pytest
import torch

from restorekit.scripts import psf as P

DXY, DZ, NX, NZ = 0.02, 0.02, 49, 121  # 2.4 µm axial range: enough for both FWHMs

REFERENCE_SETS = {
    "NA1.4 matched": (dict(NA=1.4, ns=1.515), 0.222, 0.591),
    "NA1.2 ns1.33": (dict(NA=1.2, ns=1.33), 0.258, 0.911),
}


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module", params=list(REFERENCE_SETS))
def stacks(request):
    import microscPSF.microscPSF as msPSF
    import psfmodels

    overrides, lat_ref, ax_ref = REFERENCE_SETS[request.param]
    mic = P.Microscope(wavelength=0.6, **overrides)
    z = P.centered_z(NZ, DZ)
    ours = P.gibson_lanni_stack(mic, NX, DXY, z)
    mp = dict(msPSF.m_params)
    mp.update(overrides)
    ms = msPSF.gLXYZFocalScan(mp, DXY, NX, -z, pz=0.0, wvl=0.6)  # opposite z convention
    pm = psfmodels.make_psf(z, NX, dxy=DXY, pz=0.0, wvl=0.6, model="scalar", **overrides)
    return request.param, ours, ms, pm, lat_ref, ax_ref


def test_psf_correlates_with_reference_libraries(stacks):
    name, ours, ms, pm, _, _ = stacks
    assert ours.shape == ms.shape == pm.shape == (NZ, NX, NX)
    assert _corr(ours, ms) >= 0.999, name
    assert _corr(ours, pm) >= 0.999, name


def test_psf_fwhm_matches_references(stacks):
    name, ours, ms, pm, lat_ref, ax_ref = stacks
    lat, ax = P.stack_fwhm(ours, DXY, DZ)
    for ref in (ms, pm):
        rl, ra = P.stack_fwhm(ref, DXY, DZ)
        assert abs(lat - rl) / rl <= 0.02, (name, lat, rl)
        assert abs(ax - ra) / ra <= 0.02, (name, ax, ra)
    # the published / measured numbers
    assert abs(lat - lat_ref) / lat_ref <= 0.02, (name, lat)
    assert abs(ax - ax_ref) / ax_ref <= 0.02, (name, ax)


def test_psf_peak_on_axis_at_focus(stacks):
    _, ours, *_ = stacks
    iz, iy, ix = np.unravel_index(np.argmax(ours), ours.shape)
    assert (iz, iy, ix) == (NZ // 2, NX // 2, NX // 2)
    assert ours.max() == pytest.approx(1.0)


def test_aberrated_psf_matches_microscpsf_and_fast_equals_quadrature():
    """A particle 2 µm deep in water under oil: focal shift and asymmetry as in microscpsf-py;
    the Bessel series agrees with direct quadrature of the Gibson–Lanni integral."""
    import microscPSF.microscPSF as msPSF

    mic = P.Microscope(NA=1.4, wavelength=0.6, ns=1.33)
    pz = 2.0
    z = P.centered_z(61, 0.05, pz)
    ours, info = P.gibson_lanni_stack(mic, 33, 0.04, z, pz=pz, return_info=True)
    quad = P.gibson_lanni_stack(mic, 33, 0.04, z, pz=pz, method="quadrature")
    mp = dict(msPSF.m_params)
    mp.update(NA=1.4, ns=1.33)
    ms = msPSF.gLXYZFocalScan(mp, 0.04, 33, -z, pz=pz, wvl=0.6)
    assert _corr(ours, ms) >= 0.999
    assert _corr(ours, quad) >= 0.9999
    assert info["fit_residual"] < 1e-3
    # focal shift: in a lower-index sample the actual focus lags the nominal one, so the particle
    # is in focus at a nominal z beyond its depth, at least the paraxial ni/ns ratio (1.14) and
    # below the known high-NA axial scaling (~1.4)
    iz = np.unravel_index(np.argmax(ours), ours.shape)[0]
    assert pz * 1.515 / 1.33 <= z[iz] <= pz * 1.4
    # and the axial profile is asymmetric (it is symmetric for matched indices)
    ax = ours[:, 16, 16]
    assert _corr(ax, ax[::-1]) < 0.99


def test_born_wolf_is_symmetric_and_matches_airy():
    """In focus, the Born–Wolf PSF is the Airy pattern [2 J1(v)/v]², v = 2π NA r / λ."""
    from scipy.special import j1

    stack = P.born_wolf_stack(0.8, 0.5, 1.515, 41, 0.03, P.centered_z(21, 0.1))
    np.testing.assert_allclose(stack, stack[::-1], atol=1e-3)  # symmetric in z (series fit error)
    plane = stack[10] / stack[10].max()
    r = (np.arange(41) - 20) * 0.03
    v = 2 * np.pi * 0.8 * np.abs(r) / 0.5
    airy = np.where(v == 0, 1.0, (2 * j1(np.maximum(v, 1e-12)) / np.maximum(v, 1e-12)) ** 2)
    np.testing.assert_allclose(plane[20], airy, atol=2e-3)


def test_psf_bad_parameters():
    with pytest.raises(ValueError, match="NA"):
        P.Microscope(NA=1.6, ni=1.515).validate()
    with pytest.raises(ValueError, match="µm"):
        P.Microscope(wavelength=520.0).validate()
    with pytest.raises(ValueError, match="pixel size"):
        P.gibson_lanni_stack(P.Microscope(), 15, 0.0, [0.0])
    with pytest.raises(ValueError, match="particle depth"):
        P.gibson_lanni_stack(P.Microscope(), 15, 0.05, [0.0], pz=-1.0)


def _psf_node_args(**kw):
    args = dict(model="gibson_lanni", NA=1.4, wavelength=0.6, ns=1.515, ni=1.515, ni0=1.515, ng=1.515,
                ng0=1.515, tg=170.0, tg0=170.0, ti0=150.0, pixel_size=0.04, size=33, z_planes=1,
                z_step=0.1, particle_depth=0.0, focus_offset=0.0, view="max_projection", display="gamma")
    args.update(kw)
    return args


def test_psf_node_outputs(pack):
    from restorekit.nodes import optics

    node = optics.RestoreKitPSF()
    for key, spec in node.INPUT_TYPES()["required"].items():
        assert "tooltip" in spec[1], key
    img, data, info = node.make_psf(**_psf_node_args())
    assert img.shape == (1, 33, 33, 3) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) == pytest.approx(1.0)
    assert data["psf"].shape == (1, 33, 33)
    (picture, _), report = P.make_psf(**_psf_node_args())  # the node's library call
    assert torch.equal(img[0, ..., 0], torch.from_numpy(picture.astype(np.float32)))
    assert report.model == "gibson_lanni" and report.axial_fwhm is None and 0.1 < report.lateral_fwhm < 0.5

    img, data, info = node.make_psf(**_psf_node_args(model="born_wolf", z_planes=21, view="xz_section",
                                                     display="linear", particle_depth=3.0))
    assert img.shape == (1, 21, 33, 3)
    assert data["psf"].shape == (21, 33, 33)
    _, report = P.make_psf(**_psf_node_args(model="born_wolf", z_planes=21, view="xz_section", display="linear",
                                            particle_depth=3.0))
    assert report.model == "born_wolf" and report.microscope.ns == report.microscope.ni == 1.515
    assert np.isfinite(report.axial_fwhm) and report.axial_fwhm > report.lateral_fwhm
    assert not torch.isnan(img).any()

    with pytest.raises(ValueError, match="NA"):
        node.make_psf(**_psf_node_args(NA=1.6))
