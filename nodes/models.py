"""Model nodes: Real-ESRGAN, SCUNet, SFHformer and Noise-DA on official weight files.

Each node is its schema plus one call of :func:`scripts.inference.chain.run_family`: the file is
loaded with ``scripts.inference.zoo`` (weights only, strict architecture checks) and run through the
memory-safe runner (device, tile and precision chosen from free memory, progress per tile,
interruptible, out-of-memory fallback); with ``fallback`` on, a failure of the full model moves to a
lighter model the user names, then to a classical method.  ``info`` says which path ran.

Model folders: Real-ESRGAN and SCUNet files from ComfyUI's ``models/upscale_models``; SFHformer and
Noise-DA files from ``models/restorekit`` (the pack registers that folder).
"""
from __future__ import annotations

from ._common import CATEGORY_ROOT, DEVICE_INPUT, bool_input, choice_input, float_input, image_input
from ._common import ImageNode, info_text, int_input, model_files, node_mappings
from ..scripts.archs.noise_da import LICENSE_TEXT
from ..scripts.inference.chain import NONE
from ..scripts.inference.runner import PRECISIONS
from ..scripts.inference.zoo import FOLDER_KINDS, NOISE_DA_TASKS, SFH_TASKS

CATEGORY = f"{CATEGORY_ROOT}/Models"
NOISE_DA_LICENSE = LICENSE_TEXT + " Set accept_license to true to confirm your use is non-commercial."


def _common_inputs(family: str, what: str, archs=None) -> dict:
    kind = FOLDER_KINDS[family]
    files = model_files(kind, archs)
    return {
        "model_name": (files, {"tooltip": f"{what} weight file in ComfyUI's models/{kind} folder."}),
        "device": DEVICE_INPUT,
        "tile": int_input(0, 0, 4096, "Tile side in input px. 0 = automatic: the whole image when it fits in free "
                                      "memory, else the largest tile that does."),
        "overlap": int_input(0, 0, 512, "Tile overlap in input px. 0 = the architecture's default; larger "
                                        "values hide seams at some extra time."),
        "precision": choice_input(PRECISIONS,
                                  "Numeric precision. auto: fp16 on a GPU where the model supports it, fp32 "
                                  "otherwise. Unsupported choices run in fp32 and info says so."),
        "fallback": bool_input(False, "On failure (out of memory, unreadable file) try the lighter model, then a "
                                      "classical method, instead of stopping with an error. info says which ran."),
        "fallback_model": ([NONE] + files, {"default": NONE, "tooltip": "Lighter model file (same folder) tried when "
                                            "fallback is on and the full model fails; none skips this step."}),
    }


class _ModelNode(ImageNode):
    """A model family's node: the image, the common model inputs (:func:`_common_inputs`) and the
    family's own (:meth:`family_inputs`), then one call of
    :func:`scripts.inference.chain.run_family` with the options :meth:`family_options` makes of them."""

    FAMILY = ""
    WHAT = ""
    #: architectures of converted (ncnn) files this node lists; None = every file of the folder
    ARCHS = None
    CATEGORY = CATEGORY
    FUNCTION = "restore"

    @classmethod
    def family_inputs(cls) -> dict:
        return {}

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": image_input()}
        req.update(_common_inputs(cls.FAMILY, cls.WHAT, cls.ARCHS))
        req.update(cls.family_inputs())
        return {"required": req}

    def family_options(self) -> tuple:
        """``(loader/fallback options, extra report fields)`` from the family's own inputs."""
        return {}, {}

    def restore(self, image, model_name, device="auto", tile=0, overlap=0, precision="auto", fallback=False,
                fallback_model=NONE, **family_inputs):
        from ..scripts.inference.chain import run_family

        options, settings = self.family_options(**family_inputs)
        out, report = run_family(self.FAMILY, image, model_name, device=device, tile=tile, overlap=overlap,
                                 precision=precision, fallback=fallback, fallback_model=fallback_model,
                                 options=options, settings=settings)
        return (out, info_text(self.DISPLAY_NAME, report))


# --- nodes ---------------------------------------------------------------------------------------
class RestoreKitRealESRGAN(_ModelNode):
    DISPLAY_NAME = "Real-ESRGAN Upscale"
    FAMILY, WHAT, ARCHS = "realesrgan", "Real-ESRGAN", ("ESRGAN", "Compact")
    DESCRIPTION = (
        "Real-ESRGAN super-resolution (Wang et al., ICCVW 2021) from official files in "
        "models/upscale_models: RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, realesr-general-x4v3 "
        "(BSD-3-Clause). denoise_strength blends realesr-general-x4v3 with its realesr-general-wdn-x4v3 "
        "twin (same folder). output_scale resamples the network output (e.g. x2 from a x4 model)."
    )

    @classmethod
    def family_inputs(cls):
        return {
            "output_scale": float_input(0.0, 0.0, 8.0, 0.25,
                                        "Final scale relative to the input. 0 = the model's own scale (x4); "
                                        "other values resample the model output (antialiased bicubic)."),
            "denoise_strength": float_input(1.0, 0.0, 1.0, 0.05,
                                            "realesr-general-x4v3 only: 1 = full denoising (general-x4v3), "
                                            "0 = keep noise (general-wdn-x4v3); between blends the two weight sets."),
        }

    def family_options(self, output_scale=0.0, denoise_strength=1.0):
        return ({"output_scale": float(output_scale), "denoise_strength": float(denoise_strength)},
                {"denoise strength": float(denoise_strength)})


class RestoreKitSCUNet(_ModelNode):
    DISPLAY_NAME = "SCUNet Denoise"
    FAMILY, WHAT, ARCHS = "scunet", "SCUNet", ("SCUNet",)
    DESCRIPTION = (
        "SCUNet blind denoising (Zhang et al., Machine Intelligence Research 2023; Apache-2.0) from "
        "scunet_color_real_psnr.pth / scunet_color_real_gan.pth in models/upscale_models. Pads to a "
        "multiple of 64 by replication as the official code does; tiles are multiples of 64 with >= 64 px "
        "overlap."
    )

    def family_options(self):
        return {}, {"tile rule": "multiple of 64, overlap >= 64"}


class RestoreKitSFHformer(_ModelNode):
    DISPLAY_NAME = "SFHformer Restore"
    FAMILY, WHAT = "sfhformer", "SFHformer"
    DESCRIPTION = (
        "SFHformer (Jiang et al., ECCV 2024; MIT) on the official released weights in models/restorekit: "
        "dehazing (sfhformer_haze_its.pth indoor, sfhformer_haze_ots.pth outdoor), low-light "
        "(sfhformer_11211_lolv2s.pth, sfhformer_22422_lolv2r.pth), GoPro motion deblurring. Pads to a "
        "multiple of 8 and crops back. Its Fourier branch sees the whole image, so tiles can leave faint seams."
    )

    @classmethod
    def family_inputs(cls):
        return {"task": choice_input(SFH_TASKS, "Which released weights the file holds. auto: from the weights "
                                                "(and 'its' in the file name for indoor dehazing, which runs "
                                                "without the Fourier BatchNorm as officially evaluated).")}

    def family_options(self, task="auto"):
        return {"task": task}, {"task": task}


class RestoreKitNoiseDA(_ModelNode):
    DISPLAY_NAME = "Noise-DA Restore (non-commercial)"
    FAMILY, WHAT = "noise_da", "Noise-DA"
    DESCRIPTION = (
        "Noise-DA restoration network (Liao et al., ICLR 2025) on the official denoise / derain / deblur "
        "checkpoints in models/restorekit (only the restoration U-Net is used). LICENCE: " + NOISE_DA_LICENSE
    )

    @classmethod
    def family_inputs(cls):
        return {
            "task": choice_input(NOISE_DA_TASKS, "Which checkpoint this is (the network is the same; the choice "
                                                 "labels info and picks the classical fallback)."),
            "accept_license": bool_input(False, NOISE_DA_LICENSE),
        }

    def family_options(self, task="denoise", accept_license=False):
        if not accept_license:
            raise ValueError("Noise-DA: accept_license is false. " + NOISE_DA_LICENSE)
        return {"task": task}, {"task": task, "licence": "NTU S-Lab 1.0, non-commercial (accepted)"}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitRealESRGAN, RestoreKitSCUNet, RestoreKitSFHformer, RestoreKitNoiseDA)
