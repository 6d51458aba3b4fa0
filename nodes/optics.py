"""Optics nodes: microscope PSF (Gibson–Lanni / Born–Wolf), non-blind deconvolution (Richardson–Lucy,
Wiener) and linear motion deblurring with the motion estimated from the log spectrum."""
from __future__ import annotations

import numpy as np
import torch

from ._common import (
    resolve_device,
    CATEGORY_ROOT,
    DEVICE_INPUT,
    bool_input,
    check_image,
    choice_input,
    float_input,
    format_info,
    image_input,
    int_input,
    merge_alpha,
    split_alpha,
    timed,
)

CATEGORY = f"{CATEGORY_ROOT}/Optics"
PSF_TYPE = "RESTOREKIT_PSF"


# --- shared helpers ------------------------------------------------------------------------------
def _deconvolve_batch(image: torch.Tensor, kernels, opts: dict, device: str):
    """Deconvolve every image of a checked batch (alpha kept).  ``kernels``: one 2D kernel or a list
    (one per image).  Returns (IMAGE, list of reports, device note)."""
    from ..scripts.deconvolution import deconvolve
    from ..scripts.inference.runtime import get_runtime

    rt = get_runtime()
    dev, note = resolve_device(device)
    rgb, alpha = split_alpha(image)
    # memory plan: ~12 float32 buffers of the padded size per channel at once (RL), checked against
    # the free memory of the device; GPU -> CPU, then one channel at a time, then a clear error
    kmax = max(max(k.shape) for k in (kernels if isinstance(kernels, list) else [kernels]))
    h, w, c = rgb.shape[1], rgb.shape[2], rgb.shape[3]
    per_channel = (h + 2 * kmax + 64) * (w + 2 * kmax + 64) * 4 * 12
    split_channels = False
    if dev.type != "cpu" and per_channel * c > 0.8 * rt.free_memory(dev):
        dev, note = torch.device("cpu"), f"cpu (not enough free memory on {dev})"
    if per_channel * c > 0.8 * rt.free_memory(dev):
        split_channels = True
        note += ", one channel at a time (memory)"
        if per_channel > 0.8 * rt.free_memory(dev):
            raise ValueError(f"Deconvolve: a {w}x{h} image with a {kmax} px kernel needs about "
                             f"{per_channel / 2**30:.1f} GiB per channel, more than the free memory "
                             f"({rt.free_memory(dev) / 2**30:.1f} GiB); downscale or crop it first")
    outs, reports = [], []
    b = rgb.shape[0]
    iters = int(opts.get("iterations", 1)) if opts.get("method") == "richardson_lucy" else 1
    bar = rt.progress(b * iters, "RestoreKit deconvolution")

    def tick(i, n):
        bar.update(1)
        if i % 5 == 0:
            rt.check_interrupt()

    oom = tuple(rt.oom_exception_types()) if dev.type != "cpu" else ()
    try:
        for i in range(b):
            k = kernels[i] if isinstance(kernels, list) else kernels
            parts = [rgb[i][..., j:j + 1] for j in range(c)] if split_channels else [rgb[i]]
            done = []
            for part in parts:
                try:
                    out, rep = deconvolve(part, k, device=dev, on_iteration=tick, **opts)
                except oom as exc:  # GPU full: redo this image on the CPU
                    rt.empty_cache(dev)
                    dev = torch.device("cpu")
                    out, rep = deconvolve(part, k, device=dev, on_iteration=tick, **opts)
                    note = f"cpu (GPU out of memory: {type(exc).__name__})"
                done.append(out.to("cpu", torch.float32))
            if opts.get("method") != "richardson_lucy":
                bar.update(1)
            outs.append(torch.cat(done, dim=-1))
            reports.append(rep)
    finally:
        bar.close()
    out = torch.stack(outs).clamp(0.0, 1.0)
    return merge_alpha(torch.nan_to_num(out, nan=0.0), alpha), reports, note


_REG_DEFAULTS = {"damping": 2.0, "tv": 0.002}


def _deconv_inputs():
    return {
        "method": choice_input(["richardson_lucy", "wiener"],
                               "richardson_lucy: iterative, keeps values positive, best for "
                               "photon-noise images. wiener: one step, fast, needs the balance."),
        "iterations": int_input(30, 1, 1000, "Richardson–Lucy iterations. More sharpens more but "
                                "amplifies noise; use a stop rule or regularisation on noisy images."),
        "regularisation": choice_input(["none", "damping", "tv"],
                                       "none: plain RL. damping: White's damped RL, ignores residuals "
                                       "below strength×noise σ. tv: total-variation RL (Dey 2006), "
                                       "smooths noise while keeping edges."),
        "strength": float_input(0.0, 0.0, 10.0, 0.001,
                                "Regularisation strength; 0 = default (damping 2 σ, tv λ 0.002). "
                                "damping: threshold in noise standard deviations. tv: λ (0.001–0.01)."),
        "stop_rule": choice_input(["none", "discrepancy"],
                                  "discrepancy: stop RL once the residual reaches the estimated "
                                  "noise level (Morozov), before noise is amplified."),
        "wiener_balance": float_input(0.01, 1e-5, 1.0, 0.0001,
                                      "Wiener noise-to-signal power ratio: larger is smoother and "
                                      "rings less, smaller is sharper.", round=0.00001),
        "taper_edges": bool_input(True, "Pad with a mirrored, cosine-tapered border and fit only the "
                                  "observed pixels, so borders do not ring. Off: treat the image "
                                  "as periodic."),
    }


def _deconv_opts(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges):
    strength = float(strength)
    if regularisation != "none" and strength <= 0:
        strength = _REG_DEFAULTS[regularisation]
    return {"method": method, "iterations": int(iterations), "regularisation": regularisation,
            "strength": strength, "stop_rule": stop_rule, "balance": float(wiener_balance),
            "taper": bool(taper_edges)}


def _summarise(reports, opts):
    its = [r["iterations_run"] for r in reports]
    fields = {"method": opts["method"]}
    if opts["method"] == "richardson_lucy":
        fields["iterations run"] = its if len(its) > 1 else its[0]
        fields["regularisation"] = (f"{opts['regularisation']} (strength {opts['strength']:.4g})"
                                    if opts["regularisation"] != "none" else "none")
        fields["stop rule"] = opts["stop_rule"] + (" (stopped early)" if any(r["stopped_early"] for r in reports) else "")
    else:
        fields["wiener balance"] = opts["balance"]
    sig = [round(float(np.mean(r["noise_sigma"])), 5) for r in reports]
    fields["noise sigma (est.)"] = sig if len(sig) > 1 else sig[0]
    fields["edge taper"] = f"on (pad {reports[0]['pad']} px)" if opts["taper"] else "off (periodic)"
    return fields


def _psf_kernel(psf: dict, plane: str) -> tuple:
    """2D kernel from a RESTOREKIT_PSF: the brightest plane or the axial sum, trimmed to where the
    PSF exceeds 1e-4 of its peak."""
    from ..scripts.psf import in_focus_plane

    if not isinstance(psf, dict) or "psf" not in psf:
        raise ValueError("Deconvolve: the psf input is not a RESTOREKIT_PSF (connect the Microscope PSF node)")
    stack = np.asarray(psf["psf"], dtype=np.float64)
    if plane == "axial sum" and stack.ndim == 3:
        k, note = stack.sum(axis=0), f"sum of {stack.shape[0]} planes"
    else:
        k, iz = in_focus_plane(stack)
        note = f"plane {iz} of {stack.shape[0] if stack.ndim == 3 else 1} (brightest)"
    k = k / k.max()
    rows = np.nonzero(k.max(axis=1) > 1e-4)[0]
    cols = np.nonzero(k.max(axis=0) > 1e-4)[0]
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    ry = max(cy - rows.min(), rows.max() - cy, 1)
    rx = max(cx - cols.min(), cols.max() - cx, 1)
    k = k[max(cy - ry, 0):cy + ry + 1, max(cx - rx, 0):cx + rx + 1]
    return k, note


# --- nodes ---------------------------------------------------------------------------------------
class RestoreKitPSF:
    """Widefield fluorescence microscope PSF, scalar Gibson–Lanni model (Born–Wolf when every index
    matches), computed with the fast Bessel-series method of Li, Xue & Blu (2017)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": choice_input(["gibson_lanni", "born_wolf"],
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
                "view": choice_input(["max_projection", "in_focus_slice", "xz_section"],
                                     "What the image output shows: maximum projection along z, the "
                                     "brightest plane, or the x–z section through the axis."),
                "display": choice_input(["gamma", "linear", "log"],
                                        "Image tone: gamma 0.3 (shows rings), linear, or log over 4 decades."),
            }
        }

    RETURN_TYPES = ("IMAGE", PSF_TYPE, "STRING")
    RETURN_NAMES = ("image", "psf", "info")
    FUNCTION = "make_psf"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def make_psf(self, model, NA, wavelength, ns, ni, ni0, ng, ng0, tg, tg0, ti0, pixel_size, size,
                 z_planes, z_step, particle_depth, focus_offset, view="max_projection", display="gamma"):
        from ..scripts import psf as P

        size = int(size) | 1
        with timed() as t:
            if model == "born_wolf":
                mic = P.matched(float(NA), float(wavelength), float(ni))
            else:
                mic = P.Microscope(NA=float(NA), wavelength=float(wavelength), ns=float(ns), ng=float(ng),
                                   ng0=float(ng0), ni=float(ni), ni0=float(ni0), tg=float(tg),
                                   tg0=float(tg0), ti0=float(ti0))
            mic.validate()
            pz = float(particle_depth)
            z = P.centered_z(int(z_planes), float(z_step), pz + float(focus_offset))
            stack, fit = P.gibson_lanni_stack(mic, size, float(pixel_size), z, pz=pz, return_info=True)
        if view == "xz_section":
            pic = stack[:, size // 2, :]
        elif view == "in_focus_slice":
            pic = P.in_focus_plane(stack)[0]
        else:
            pic = stack.max(axis=0)
        pic = pic / max(pic.max(), 1e-300)
        if display == "gamma":
            pic = pic ** 0.3
        elif display == "log":
            pic = np.clip(1.0 + np.log10(np.maximum(pic, 1e-12)) / 4.0, 0.0, 1.0)
        img = torch.from_numpy(np.repeat(pic[None, :, :, None], 3, axis=3).astype(np.float32)).clamp(0, 1)
        fields = {"model": "Born–Wolf (matched indices)" if model == "born_wolf" else "Gibson–Lanni",
                  "NA": float(NA), "wavelength (µm)": float(wavelength),
                  "indices ns/ng/ng0/ni/ni0": f"{mic.ns}/{mic.ng}/{mic.ng0}/{mic.ni}/{mic.ni0}",
                  "thickness tg/tg0/ti0 (µm)": f"{mic.tg}/{mic.tg0}/{mic.ti0}",
                  "pixel size (µm)": float(pixel_size), "stack": f"{len(z)} x {size} x {size} (z, y, x)",
                  "z range (µm)": f"{z[0]:.3f} .. {z[-1]:.3f} (focal plane above coverslip)",
                  "particle depth (µm)": pz}
        lat, ax = P.stack_fwhm(stack, float(pixel_size), float(z_step))
        fields["lateral FWHM (µm)"] = lat if np.isfinite(lat) else "wider than the PSF frame"
        if len(z) >= 3:
            fields["axial FWHM (µm)"] = ax if np.isfinite(ax) else "wider than the stack"
        if "fallback" in fit:
            fields["method"] = fit["fallback"]
        else:
            fields["method"] = (f"Li–Xue–Blu Bessel series, {fit.get('basis')} terms, "
                                f"pupil fit RMS {fit.get('fit_residual', 0):.2g}")
        fields["view"] = f"{view}, {display}"
        fields["time (s)"] = t["seconds"]
        data = {"psf": stack.astype(np.float32), "pixel_size": float(pixel_size), "z": z.tolist(),
                "model": model, "params": mic.as_dict(), "particle_depth": pz}
        return (img, data, format_info("Microscope PSF", fields))


class RestoreKitDeconvolve:
    """Non-blind deconvolution: Richardson–Lucy (optionally damped or TV-regularised, with a stop rule)
    or Wiener, with edge tapering; the kernel is a Gaussian, a disk, a linear motion or a PSF from the
    Microscope PSF node.  torch FFTs: runs on the GPU when one is available."""

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": image_input_(),
            "kernel_source": choice_input(["gaussian", "disk", "motion", "psf"],
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
            "psf_plane": choice_input(["in_focus", "axial sum"],
                                      "For a 3D PSF: use its brightest (in-focus) plane, or the sum over "
                                      "z (a thick sample seen in widefield)."),
            "device": DEVICE_INPUT,
        })
        return {"required": req,
                "optional": {"psf": (PSF_TYPE, {"tooltip": "PSF from the Microscope PSF node (kernel_source psf). "
                                                "Its pixel size must match the image's."})}}

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "deconvolve"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def deconvolve(self, image, kernel_source, method, iterations, regularisation, strength, stop_rule,
                   wiener_balance, taper_edges, sigma, radius, motion_length, motion_angle,
                   psf_plane="in_focus", device="auto", psf=None):
        from ..scripts import kernels as K

        x = check_image(image)
        with timed() as t:
            if kernel_source == "gaussian":
                k, knote = K.gaussian_kernel(float(sigma)), f"gaussian σ {float(sigma):.4g} px"
            elif kernel_source == "disk":
                k, knote = K.disk_kernel(float(radius)), f"disk r {float(radius):.4g} px"
            elif kernel_source == "motion":
                k = K.motion_kernel(float(motion_length), float(motion_angle))
                knote = f"motion {float(motion_length):.4g} px at {float(motion_angle):.4g}°"
            elif kernel_source == "psf":
                if psf is None:
                    raise ValueError("Deconvolve: kernel_source is psf but no psf input is connected")
                k, pnote = _psf_kernel(psf, psf_plane)
                knote = f"microscope PSF ({psf.get('model')}, {pnote}, pixel {psf.get('pixel_size')} µm)"
            else:
                raise ValueError(f"Deconvolve: unknown kernel_source {kernel_source!r}")
            if k.shape[0] > x.shape[1] or k.shape[1] > x.shape[2]:
                raise ValueError(f"Deconvolve: the kernel ({k.shape[1]}x{k.shape[0]} px) is larger than the "
                                 f"image ({x.shape[2]}x{x.shape[1]} px)")
            opts = _deconv_opts(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges)
            out, reports, dnote = _deconvolve_batch(x, k, opts, device)
        fields = {"kernel": f"{knote}, {k.shape[1]}x{k.shape[0]} px"}
        fields.update(_summarise(reports, opts))
        fields["device"] = dnote
        fields["time (s)"] = t["seconds"]
        return (out, format_info("Deconvolve", fields))


class RestoreKitMotionDeblur:
    """Linear motion deblurring: estimates the motion angle and length from the log spectrum
    (cepstrum, refined by a fit of the sinc zero lines), builds the motion kernel and deconvolves."""

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

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "deblur"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def deblur(self, image, method, iterations, regularisation, strength, stop_rule, wiener_balance,
               taper_edges, max_length, length_override=0.0, angle_override=-1.0, device="auto"):
        from ..scripts import kernels as K
        from ..scripts.motion_blur import estimate_motion

        x = check_image(image)
        rgb, _ = split_alpha(x)
        with timed() as t:
            kernels, notes = [], []
            for i in range(x.shape[0]):
                length, angle = float(length_override), float(angle_override)
                how = "given"
                if length <= 0 or angle < 0:
                    est = estimate_motion(rgb[i].numpy(), max_length=float(max_length))
                    how = f"estimated (fit score {est['score']:.3f}{', low: unreliable' if est['score'] < 0.1 else ''})"
                    length = est["length"] if length <= 0 else length
                    angle = est["angle"] if angle < 0 else angle
                kernels.append(K.motion_kernel(length, angle))
                notes.append(f"image {i}: angle {angle:.2f}°, length {length:.2f} px, {how}")
            for i, k in enumerate(kernels):
                if k.shape[0] > x.shape[1] or k.shape[1] > x.shape[2]:
                    raise ValueError(f"Motion Deblur: the motion kernel ({k.shape[1]}x{k.shape[0]} px) is larger "
                                     f"than image {i} ({x.shape[2]}x{x.shape[1]} px)")
            opts = _deconv_opts(method, iterations, regularisation, strength, stop_rule, wiener_balance, taper_edges)
            out, reports, dnote = _deconvolve_batch(x, kernels, opts, device)
        fields = {"motion": notes, "angle convention": "degrees counter-clockwise from horizontal, y up"}
        fields.update(_summarise(reports, opts))
        fields["device"] = dnote
        fields["time (s)"] = t["seconds"]
        return (out, format_info("Motion Deblur", fields))


def image_input_():
    return image_input("Image(s) to deconvolve: IMAGE [B,H,W,C], grey, RGB or RGBA (alpha kept), 0..1.")


NODE_CLASS_MAPPINGS = {
    "RestoreKitPSF": RestoreKitPSF,
    "RestoreKitDeconvolve": RestoreKitDeconvolve,
    "RestoreKitMotionDeblur": RestoreKitMotionDeblur,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitPSF": "Microscope PSF",
    "RestoreKitDeconvolve": "Deconvolve",
    "RestoreKitMotionDeblur": "Motion Deblur",
}
