"""Denoising nodes: film-grain BM3D (optional bm3d package, permissive fallback) and classical
denoisers (non-local means, bilateral, wavelet, total variation) with automatic noise level."""
from __future__ import annotations

from functools import partial

from ._common import CATEGORY_ROOT, choice_input, float_input, image_input, ImageNode, int_input
from ._common import node_mappings
from ..scripts.bm3d_denoise import METHODS as BM3D_METHODS, PROFILES
from ..scripts.denoise import METHODS
from ..scripts.film_grain import NOISE_MODELS
from ..scripts.noise import ESTIMATORS

CATEGORY = f"{CATEGORY_ROOT}/Denoise"


class _DenoiseNode(ImageNode):
    CATEGORY = CATEGORY
    FUNCTION = "denoise"


class RestoreKitFilmGrainBM3D(_DenoiseNode):
    """BM3D with the grain's power spectrum estimated from the image (correlated noise), or plain
    white-noise BM3D.  Uses the optional `bm3d` package (non-commercial licence) when installed,
    else a permissive sliding-window DFT Wiener fallback; `info` says which ran."""

    DISPLAY_NAME = "Film Grain Denoise (BM3D)"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "noise_model": choice_input(
                    NOISE_MODELS,
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
                "method": choice_input(BM3D_METHODS,
                                       "auto: the bm3d package when installed, else the fallback. "
                                       "bm3d: require the package. fallback: permissive Wiener filter."),
                "profile": choice_input(PROFILES,
                                        "bm3d package profile: np (normal), high (slower, a little "
                                        "better), vn (very noisy), lc (low complexity, fast)."),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional noise-only area (white = flat, grain only, e.g. "
                                             "sky or film border) to measure the grain on."}),
            },
        }

    DESCRIPTION = __doc__

    def denoise(self, image, noise_model="grain spectrum (estimated)", sigma=0.0, strength=1.0,
                block=32, method="auto", profile="np", mask=None):
        from ..scripts.batch import read_masks
        from ..scripts.film_grain import denoise_film_grain

        masks = []  # the MASK at the images' size, read once

        def run(img, i):
            if mask is not None and not masks:
                masks.append(read_masks(mask, img.shape[0], img.shape[1]))
            m = masks[0][min(i, masks[0].shape[0] - 1)] if masks else None
            return denoise_film_grain(img, noise_model, sigma, strength, block, method, profile, mask=m)

        return self.run_images(image, run, stage="denoise", pass_index=True)


class RestoreKitDenoise(_DenoiseNode):
    """Classical denoisers with an automatic noise level: non-local means, bilateral, wavelet
    (BayesShrink), total variation (Chambolle)."""

    DISPLAY_NAME = "Classical Denoise"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "method": choice_input(METHODS,
                                   "nlm: non-local means (best detail, slowest). bilateral: edge-"
                                   "preserving, fast. wavelet: BayesShrink soft thresholding. tv: "
                                   "total variation (flat regions, can look cartoonish)."),
            "sigma": float_input(0.0, 0.0, 0.5, 0.001,
                                 "Noise standard deviation in 0..1 units (10/255 ≈ 0.039). 0 = "
                                 "estimate it from the image."),
            "strength": float_input(1.0, 0.1, 4.0, 0.05,
                                    "Scales the filter strength the method derives from sigma."),
            "sigma_estimator": choice_input(ESTIMATORS,
                                            "Noise estimator when sigma is 0: skimage estimate_sigma "
                                            "(Daubechies wavelet MAD) or a Haar MAD (Donoho-Johnstone)."),
        }}

    DESCRIPTION = __doc__

    def denoise(self, image, method="nlm", sigma=0.0, strength=1.0, sigma_estimator="skimage"):
        from ..scripts import denoise as dn

        return self.run_images(image, partial(dn.denoise, method=method, sigma=sigma if sigma > 0 else None,
                                              strength=strength, sigma_method=sigma_estimator))


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(RestoreKitFilmGrainBM3D, RestoreKitDenoise)
