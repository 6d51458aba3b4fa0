"""Denoising nodes: film-grain BM3D (optional bm3d package, permissive fallback) and classical
denoisers (non-local means, bilateral, wavelet, total variation) with automatic noise level."""
from __future__ import annotations

import numpy as np
import torch

from ._common import (
    CATEGORY_ROOT,
    choice_input,
    float_input,
    format_info,
    from_numpy,
    image_input,
    int_input,
    merge_alpha,
    prepare_image,
    split_alpha,
    timed,
    to_numpy,
)

CATEGORY = f"{CATEGORY_ROOT}/Denoise"


class RestoreKitFilmGrainBM3D:
    """BM3D with the grain's power spectrum estimated from the image (correlated noise), or plain
    white-noise BM3D.  Uses the optional `bm3d` package (non-commercial licence) when installed,
    else a permissive sliding-window DFT Wiener fallback; `info` says which ran."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "noise_model": choice_input(
                    ["grain spectrum (estimated)", "white noise (sigma)"],
                    "grain spectrum: the grain's power spectrum is measured on the flattest blocks "
                    "(or the mask) and BM3D removes correlated noise of that spectrum. white noise: "
                    "classic BM3D with one noise level.",
                ),
                "sigma": float_input(0.0, 0.0, 0.5, 0.001,
                                     "White-noise mode: noise standard deviation in 0..1 units "
                                     "(10/255 ≈ 0.039). 0 = estimate it (wavelet MAD). Ignored in "
                                     "grain mode."),
                "strength": float_input(1.0, 0.1, 4.0, 0.05,
                                        "Multiplies the noise power handed to the denoiser: above 1 "
                                        "removes more (and more detail), below 1 less."),
                "block": int_input(32, 8, 128,
                                   "Grain mode: side in px of the blocks whose periodograms are "
                                   "averaged (larger resolves the spectrum finer, needs larger flat areas).",
                                   step=8),
                "method": choice_input(["auto", "bm3d", "fallback"],
                                       "auto: the bm3d package when installed, else the fallback. "
                                       "bm3d: require the package. fallback: permissive Wiener filter."),
                "profile": choice_input(["np", "high", "vn", "lc"],
                                        "bm3d package profile: np (normal), high (slower, a little "
                                        "better), vn (very noisy), lc (low complexity, fast)."),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional noise-only area (white = flat, grain only, e.g. "
                                             "sky or film border) to measure the grain on."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "denoise"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def denoise(self, image, noise_model="grain spectrum (estimated)", sigma=0.0, strength=1.0,
                block=32, method="auto", profile="np", mask=None):
        from ..scripts import bm3d_denoise, grain
        from ..scripts.denoise import estimate_noise_sigma

        x, notes = prepare_image(image)
        rgb, alpha = split_alpha(x)
        arr = to_numpy(rgb).astype(np.float64)
        b, h, w, c = arr.shape
        masks = None
        if mask is not None:
            m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
            if m.ndim == 2:
                m = m[None]
            if m.ndim != 3:
                raise ValueError(f"mask: expected MASK [B,H,W], got shape {tuple(m.shape)}")
            if tuple(m.shape[1:]) != (h, w):
                m = torch.nn.functional.interpolate(m[:, None].float(), size=(h, w), mode="nearest")[:, 0]
            masks = m.detach().cpu().float().numpy()
        outs = []
        paths = set()
        fields_per = []
        grain_mode = noise_model.startswith("grain")
        from ..scripts.inference.runtime import get_runtime

        runtime = get_runtime()
        bar = runtime.progress(b, "Film grain BM3D")
        with timed() as t:
            for i in range(b):
                runtime.check_interrupt()  # between images: bm3d itself cannot be interrupted
                z = arr[i] if c == 3 else arr[i, :, :, 0]
                grey_rgb = c == 3 and np.array_equal(z[..., 0], z[..., 1]) and np.array_equal(z[..., 0], z[..., 2])
                if grey_rgb:  # a grey picture loaded as RGB: one channel, 3x faster, right noise model
                    z = z[..., 0]
                if min(h, w) < 8:
                    res = bm3d_denoise.DenoiseResult(z.copy(), "none (image smaller than 8 px)")
                    fields_per.append("image too small to denoise: returned unchanged")
                elif grain_mode:
                    mk = None if masks is None else masks[min(i, masks.shape[0] - 1)]
                    est = grain.estimate_grain_psd(z, mask=mk, block=block)
                    psd = est.psd * strength
                    res = bm3d_denoise.denoise(z, psd=psd, method=method, profile=profile)
                    sig = ", ".join(f"{s:.4f}" for s in est.sigma)
                    fields_per.append(f"grain σ {sig} from {est.blocks} {est.block}px {est.source}"
                                      + ("; " + "; ".join(est.notes) if est.notes else ""))
                else:
                    s = float(sigma)
                    how = "given"
                    if s <= 0:
                        s = estimate_noise_sigma(z, "skimage" if min(h, w) >= 4 else "mad")
                        how = "estimated (wavelet MAD)"
                    res = bm3d_denoise.denoise(z, sigma=s * np.sqrt(strength), method=method, profile=profile)
                    fields_per.append(f"σ {s:.4f} {how}")
                paths.add(res.path + (f" ({res.detail})" if res.detail else ""))
                o = res.image
                if grey_rgb:
                    o = np.repeat(o[:, :, None], 3, axis=2)
                    fields_per[-1] += "; grey image in RGB: denoised as one channel"
                outs.append(o if o.ndim == 3 else o[:, :, None])
                bar.update(1)
            bar.close()
        out = merge_alpha(from_numpy(np.stack(outs)), alpha)
        fields = {
            "path": "; ".join(sorted(paths)),
            "noise model": noise_model,
            "noise": fields_per if len(fields_per) > 1 else fields_per[0],
            "strength": float(strength),
            "profile": profile,
            "images": f"{b} x {w}x{h}, {c} channel(s){' + alpha kept' if alpha is not None else ''}",
            "seconds": round(t["seconds"], 3),
        }
        if notes:
            fields["input"] = notes
        if "bm3d package" in fields["path"]:
            fields["licence"] = "bm3d package: non-commercial use only (Tampere University)"
        return (out, format_info("Film Grain Denoise (BM3D)", fields))


class RestoreKitDenoise:
    """Classical denoisers with an automatic noise level: non-local means, bilateral, wavelet
    (BayesShrink), total variation (Chambolle)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "method": choice_input(["nlm", "bilateral", "wavelet", "tv"],
                                       "nlm: non-local means (best detail, slowest). bilateral: edge-"
                                       "preserving, fast. wavelet: BayesShrink soft thresholding. tv: "
                                       "total variation (flat regions, can look cartoonish)."),
                "sigma": float_input(0.0, 0.0, 0.5, 0.001,
                                     "Noise standard deviation in 0..1 units (10/255 ≈ 0.039). 0 = "
                                     "estimate it from the image."),
                "strength": float_input(1.0, 0.1, 4.0, 0.05,
                                        "Scales the filter strength the method derives from sigma."),
                "sigma_estimator": choice_input(["skimage", "mad"],
                                                "Noise estimator when sigma is 0: skimage estimate_sigma "
                                                "(Daubechies wavelet MAD) or a Haar MAD (Donoho-Johnstone)."),
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "denoise"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def denoise(self, image, method="nlm", sigma=0.0, strength=1.0, sigma_estimator="skimage"):
        from ..scripts import denoise as dn

        x, notes = prepare_image(image)
        rgb, alpha = split_alpha(x)
        arr = to_numpy(rgb).astype(np.float64)
        outs, sig = [], []
        with timed() as t:
            for i in range(arr.shape[0]):
                o, s, src = dn.denoise(arr[i], method, sigma if sigma > 0 else None, strength, sigma_estimator)
                outs.append(o)
                sig.append(f"{s:.4f} ({src})")
        out = merge_alpha(from_numpy(np.stack(outs)), alpha)
        fields = {
            "method": method,
            "noise sigma": sig if len(sig) > 1 else sig[0],
            "strength": float(strength),
            "seconds": round(t["seconds"], 3),
        }
        if notes:
            fields["input"] = notes
        return (out, format_info("Classical Denoise", fields))


NODE_CLASS_MAPPINGS = {
    "RestoreKitFilmGrainBM3D": RestoreKitFilmGrainBM3D,
    "RestoreKitDenoise": RestoreKitDenoise,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitFilmGrainBM3D": "Film Grain Denoise (BM3D)",
    "RestoreKitDenoise": "Classical Denoise",
}
