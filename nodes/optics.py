"""Optics nodes: microscope PSF (Gibson–Lanni / Born–Wolf), non-blind deconvolution (Richardson–Lucy,
Wiener) and linear motion deblurring with the motion estimated from the log spectrum."""
from __future__ import annotations

from ._common import CATEGORY_ROOT, DEVICE_INPUT, bool_input, choice_input, float_input, image_input
from ._common import ImageNode, info_text, int_input, node_mappings, to_image
from ..scripts.deconvolution import METHODS, REGULARISATIONS, STOP_RULES
from ..scripts.kernels import SOURCES
from ..scripts.psf import DISPLAYS, KERNEL_PLANES, MODELS, VIEWS

CATEGORY = f"{CATEGORY_ROOT}/Optics"
PSF_TYPE = "RESTOREKIT_PSF"


def _deconv_inputs():
    return {
        "method": choice_input(METHODS,
                               "richardson_lucy: iterative, keeps values positive, best for "
                               "photon-noise images. wiener: one step, fast, needs the balance."),
        "iterations": int_input(30, 1, 1000, "Richardson–Lucy iterations. More sharpens more but "
                                "amplifies noise; use a stop rule or regularisation on noisy images."),
        "regularisation": choice_input(REGULARISATIONS,
                                       "none: plain RL. damping: White's damped RL, ignores residuals "
                                       "below strength×noise σ. tv: total-variation RL (Dey 2006), "
                                       "smooths noise while keeping edges."),
        "strength": float_input(0.0, 0.0, 10.0, 0.001,
                                "Regularisation strength; 0 = default (damping 2 σ, tv λ 0.002). "
                                "damping: threshold in noise standard deviations. tv: λ (0.001–0.01)."),
        "stop_rule": choice_input(STOP_RULES,
                                  "discrepancy: stop RL once the residual reaches the estimated "
                                  "noise level (Morozov), before noise is amplified."),
        "wiener_balance": float_input(0.01, 1e-5, 1.0, 0.0001,
                                      "Wiener noise-to-signal power ratio: larger is smoother and "
                                      "rings less, smaller is sharper.", round=0.00001),
        "taper_edges": bool_input(True, "Pad with a mirrored, cosine-tapered border and fit only the "
                                  "observed pixels, so borders do not ring. Off: treat the image "
                                  "as periodic."),
    }


def _deconv_options(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges):
    """The deconvolution inputs as :func:`scripts.deconvolution.deconvolve_images` keywords."""
    return {"method": method, "iterations": int(iterations), "regularisation": regularisation,
            "strength": float(strength), "stop_rule": stop_rule, "balance": float(wiener_balance),
            "taper": bool(taper_edges)}


# --- nodes ---------------------------------------------------------------------------------------
class RestoreKitPSF:
    """Widefield fluorescence microscope PSF, scalar Gibson–Lanni model (Born–Wolf when every index
    matches), computed with the fast Bessel-series method of Li, Xue & Blu (2017)."""

    DISPLAY_NAME = "Microscope PSF"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": choice_input(MODELS,
                                  "gibson_lanni: sample/coverslip/immersion indices and thicknesses "
                                  "may differ from the design (spherical aberration with depth). "
                                  "born_wolf: aberration-free, every index = immersion index ni."),
            "NA": float_input(1.4, 0.1, 1.7, 0.01, "Numerical aperture of the objective (must be below ni)."),
            "wavelength": float_input(0.52, 0.3, 1.2, 0.001, "Emission wavelength in µm (0.52 = 520 nm)."),
            "ns": float_input(1.33, 1.0, 2.0, 0.001, "Refractive index of the sample (1.33 water)."),
            "ni": float_input(1.515, 1.0, 2.0, 0.001, "Immersion medium index, actual (1.515 oil)."),
            "ni0": float_input(1.515, 1.0, 2.0, 0.001, "Immersion medium index, design value of the objective."),
            "ng": float_input(1.515, 1.0, 2.0, 0.001, "Coverslip index, actual."),
            "ng0": float_input(1.515, 1.0, 2.0, 0.001, "Coverslip index, design."),
            "tg": float_input(170.0, 0.0, 1000.0, 0.1, "Coverslip thickness, actual (µm)."),
            "tg0": float_input(170.0, 0.0, 1000.0, 0.1, "Coverslip thickness, design (µm; #1.5 = 170)."),
            "ti0": float_input(150.0, 0.0, 5000.0, 1.0, "Working distance: design immersion layer thickness (µm)."),
            "pixel_size": float_input(0.065, 0.001, 5.0, 0.001,
                                      "Pixel size in the sample plane (µm) = camera pixel / magnification. "
                                      "Set it to the image's pixel size when the PSF feeds Deconvolve."),
            "size": int_input(65, 9, 513, "Lateral size of the PSF in pixels (odd keeps the centre on a pixel).", step=2),
            "z_planes": int_input(1, 1, 257, "Number of focal planes: 1 = a 2D slice, more = a 3D stack."),
            "z_step": float_input(0.1, 0.001, 10.0, 0.001, "Distance between focal planes (µm)."),
            "particle_depth": float_input(0.0, 0.0, 500.0, 0.1,
                                          "Depth of the point source above the coverslip (µm); "
                                          "index mismatch aberrates the PSF more with depth."),
            "focus_offset": float_input(0.0, -100.0, 100.0, 0.01,
                                        "Centre of the focal planes relative to the particle depth (µm); "
                                        "z is the focal-plane position, positive into the sample."),
            "view": choice_input(VIEWS,
                                 "What the image output shows: maximum projection along z, the "
                                 "brightest plane, or the x–z section through the axis."),
            "display": choice_input(DISPLAYS,
                                    "Image tone: gamma 0.3 (shows rings), linear, or log over 4 decades."),
        }}

    RETURN_TYPES = ("IMAGE", PSF_TYPE, "STRING")
    RETURN_NAMES = ("image", "psf", "info")
    FUNCTION = "make_psf"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def make_psf(self, model, NA, wavelength, ns, ni, ni0, ng, ng0, tg, tg0, ti0, pixel_size, size,
                 z_planes, z_step, particle_depth, focus_offset, view="max_projection", display="gamma"):
        from ..scripts import psf as P

        (picture, data), report = P.make_psf(model, NA, wavelength, ns, ni, ni0, ng, ng0, tg, tg0, ti0, pixel_size,
                                             size, z_planes, z_step, particle_depth, focus_offset, view, display)
        image = to_image(picture[:, :, None].repeat(3, axis=2), self.DISPLAY_NAME, "PSF picture")
        return (image, data, info_text(self.DISPLAY_NAME, report))


class RestoreKitDeconvolve(ImageNode):
    """Non-blind deconvolution: Richardson–Lucy (optionally damped or TV-regularised, with a stop rule)
    or Wiener, with edge tapering; the kernel is a Gaussian, a disk, a linear motion or a PSF from the
    Microscope PSF node.  torch FFTs: runs on the GPU when one is available."""

    DISPLAY_NAME = "Deconvolve"

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": image_input_(),
            "kernel_source": choice_input(SOURCES,
                                          "Blur to undo: gaussian (sigma), disk (defocus radius), motion "
                                          "(length, angle) or psf (connect the Microscope PSF node)."),
        }
        req.update(_deconv_inputs())
        req.update({
            "sigma": float_input(1.6, 0.1, 50.0, 0.05, "Gaussian kernel standard deviation (px)."),
            "radius": float_input(3.0, 0.5, 100.0, 0.1, "Disk kernel radius (px)."),
            "motion_length": float_input(15.0, 1.0, 500.0, 0.1, "Motion kernel length (px)."),
            "motion_angle": float_input(0.0, 0.0, 180.0, 0.1,
                                        "Motion kernel angle (degrees, counter-clockwise from horizontal)."),
            "psf_plane": choice_input(KERNEL_PLANES,
                                      "For a 3D PSF: use its brightest (in-focus) plane, or the sum over "
                                      "z (a thick sample seen in widefield)."),
            "device": DEVICE_INPUT,
        })
        return {"required": req,
                "optional": {"psf": (PSF_TYPE, {"tooltip": "PSF from the Microscope PSF node (kernel_source psf). "
                                                "Its pixel size must match the image's."})}}

    FUNCTION = "deconvolve"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def deconvolve(self, image, kernel_source, method, iterations, regularisation, strength, stop_rule,
                   wiener_balance, taper_edges, sigma, radius, motion_length, motion_angle,
                   psf_plane="in_focus", device="auto", psf=None):
        from ..scripts.deconvolution import deconvolve_images
        from ..scripts.kernels import kernel_for

        kernel, note = kernel_for(kernel_source, sigma, radius, motion_length, motion_angle, psf, psf_plane)
        opts = _deconv_options(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges)
        return self.run_images(image, lambda x: deconvolve_images(x, kernel, device=device, kernel_note=note, **opts),
                               stage=method, values="as_is", per_image=False)


class RestoreKitMotionDeblur(ImageNode):
    """Linear motion deblurring: estimates the motion angle and length from the log spectrum
    (cepstrum, refined by a fit of the sinc zero lines), builds the motion kernel and deconvolves."""

    DISPLAY_NAME = "Motion Deblur"

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": image_input_()}
        req.update(_deconv_inputs())
        req.update({
            "max_length": float_input(64.0, 4.0, 256.0, 1.0, "Longest motion searched (px)."),
            "length_override": float_input(0.0, 0.0, 500.0, 0.1,
                                           "Motion length in px; 0 = estimate it from the image."),
            "angle_override": float_input(-1.0, -1.0, 180.0, 0.1,
                                          "Motion angle in degrees (counter-clockwise from horizontal); "
                                          "-1 = estimate it from the image."),
            "device": DEVICE_INPUT,
        })
        return {"required": req}

    FUNCTION = "deblur"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def deblur(self, image, method, iterations, regularisation, strength, stop_rule, wiener_balance,
               taper_edges, max_length, length_override=0.0, angle_override=-1.0, device="auto"):
        from ..scripts.motion_blur import motion_deblur

        opts = _deconv_options(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges)
        length = float(length_override) if length_override > 0 else None
        angle = float(angle_override) if angle_override >= 0 else None
        return self.run_images(image, lambda x: motion_deblur(x, length, angle, float(max_length), device, **opts),
                               stage=method, values="as_is", per_image=False)


def image_input_():
    return image_input("Image(s) to deconvolve: IMAGE [B,H,W,C], grey, RGB or RGBA (alpha kept), 0..1.")


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitPSF, RestoreKitDeconvolve, RestoreKitMotionDeblur)
