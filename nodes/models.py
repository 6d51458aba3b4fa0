"""Model nodes: Real-ESRGAN, SCUNet, SFHformer and Noise-DA on official weight files.

Each node loads its file with ``scripts.inference.zoo`` (weights only, strict architecture checks), runs
it through the memory-safe runner ``scripts.inference.runner.run_model`` (device, tile and precision
chosen from free memory, progress per tile, interruptible, out-of-memory fallback), and reports in
``info`` which path ran.  With ``fallback`` on, a failure of the full model moves to a lighter model
the user names, then to a classical method (Lanczos for upscaling, non-local means for denoising,
CLAHE / unsharp masking for the other tasks).

Model folders: Real-ESRGAN and SCUNet files from ComfyUI's ``models/upscale_models``; SFHformer and
Noise-DA files from ``models/restorekit`` (the pack registers that folder).
"""
from __future__ import annotations

import numpy as np
import torch

from ._common import (
    CATEGORY_ROOT,
    DEVICE_INPUT,
    bool_input,
    check_image,
    choice_input,
    float_input,
    format_info,
    image_input,
    int_input,
    timed,
)

CATEGORY = f"{CATEGORY_ROOT}/Models"
NONE = "none"

NOISE_DA_LICENSE = (
    "Noise-DA weights (Liao et al., ICLR 2025) are under the NTU S-Lab License 1.0: NON-COMMERCIAL "
    "use only (github.com/KangLiao929/Noise-DA/blob/main/LICENSE). Set accept_license to true to "
    "confirm your use is non-commercial."
)


def _runtime():
    from ..scripts.inference.runtime import get_runtime

    return get_runtime()


def _files(kind: str, archs=None):
    """Model files of ``kind``; with ``archs``, without converted files of other architectures."""
    try:
        rt = _runtime()
        files = list(rt.model_files(kind))
        if archs:
            from ..scripts.inference.ncnn import drop_other_archs

            files = drop_other_archs(rt.model_folders(kind), files, archs)
        return files
    except Exception:
        return []


def _common_inputs(kind: str, what: str, archs=None) -> dict:
    files = _files(kind, archs)
    return {
        "model_name": (files, {"tooltip": f"{what} weight file in ComfyUI's models/{kind} folder."}),
        "device": DEVICE_INPUT,
        "tile": int_input(0, 0, 4096, "Tile side in input px. 0 = automatic: the whole image when it fits in free "
                                      "memory, else the largest tile that does."),
        "overlap": int_input(0, 0, 512, "Tile overlap in input px. 0 = the architecture's default; larger "
                                        "values hide seams at some extra time."),
        "precision": choice_input(["auto", "fp32", "fp16", "bf16"],
                                  "Numeric precision. auto: fp16 on a GPU where the model supports it, fp32 "
                                  "otherwise. Unsupported choices run in fp32 and info says so."),
        "fallback": bool_input(False, "On failure (out of memory, unreadable file) try the lighter model, then a "
                                      "classical method, instead of stopping with an error. info says which ran."),
        "fallback_model": ([NONE] + files, {"default": NONE, "tooltip": "Lighter model file (same folder) tried when "
                                            "fallback is on and the full model fails; none skips this step."}),
    }


def _is_interrupt(exc: BaseException) -> bool:
    from ..scripts.inference.runtime import InterruptedByUser

    return isinstance(exc, InterruptedByUser) or type(exc).__name__ == "InterruptProcessingException"


def _short(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return f"{type(exc).__name__}: {msg[:240]}"


class _ModelNode:
    """Shared pipeline: check the image, walk the model chain through the runner, classical last."""

    FAMILY = ""
    TITLE = ""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "restore"

    # subclasses: _load(path, opts) -> (handle, note); _classical(image, opts) -> (tensor, name)
    def _load(self, path, opts):
        from ..scripts.inference import zoo

        return zoo.load(self.FAMILY, path, **opts)

    def _prepare(self, handle, opts):
        """Per-family handle adjustments and run_model keyword arguments."""
        return handle, {}

    def _classical(self, image, opts):
        raise NotImplementedError

    def _run_chain(self, image, model_name, device, tile, overlap, precision, fallback, fallback_model, opts):
        from ..scripts.inference.runner import run_model
        from ..scripts.inference.zoo import FOLDER_KINDS

        kind = FOLDER_KINDS[self.FAMILY]
        chain = [("full model", model_name)]
        if fallback and fallback_model and fallback_model != NONE and fallback_model != model_name:
            chain.append(("lighter model", fallback_model))
        failures = []
        for label, name in chain:
            try:
                path = _runtime().resolve_model_file(kind, name)
                handle, note = self._load(path, opts)
                handle, extra = self._prepare(handle, opts)
                ov = int(overlap) if overlap else None
                if ov is not None:
                    ov = max(ov, handle.min_overlap)
                out, report = run_model(handle, image, device=device, tile=int(tile), overlap=ov,
                                        precision=precision, **extra)
                return out, {"ran": f"{label}: {name}", "model": handle.description or handle.describe(),
                             "note": note, "report": report, "handle": handle, "failures": failures}
            except Exception as exc:  # noqa: BLE001 - re-raised unless fallback is on
                if _is_interrupt(exc) or not fallback:
                    raise
                failures.append(f"{label} {name} failed ({_short(exc)})")
        out, method = self._classical(image, opts)
        return out, {"ran": f"classical: {method}", "model": "", "note": "", "report": None,
                     "handle": None, "failures": failures}

    def _info(self, title, result, fields, seconds):
        info = {"ran": result["ran"]}
        if result["failures"]:
            info["failed"] = result["failures"]
        if result["model"]:
            info["model"] = result["model"]
        if result["note"]:
            info["note"] = result["note"]
        info.update(fields)
        if result["report"] is not None:
            renamed = {"time": "runner time", "fallbacks": "out-of-memory steps"}
            for k, v in result["report"].summary().items():
                if k != "model":
                    info[renamed.get(k, k)] = v
        info["total time"] = f"{seconds:.2f} s"
        return format_info(title, info)


# --- classical helpers -------------------------------------------------------------------------
def _per_image(image: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn(uint8 HxWxC RGB or HxWx1) -> same`` per image; alpha passes through unchanged."""
    arr = image.detach().cpu().float().numpy()
    c = arr.shape[-1]
    outs = []
    for a in arr:
        rgb = a[..., :3] if c == 4 else a
        res = fn(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)).astype(np.float32) / 255.0
        if res.ndim == 2:
            res = res[..., None]
        if c == 4:
            res = np.concatenate([res, a[..., 3:4]], axis=-1)
        outs.append(res)
    return torch.from_numpy(np.clip(np.stack(outs), 0, 1).astype(np.float32))


def classical_denoise(image: torch.Tensor) -> torch.Tensor:
    """Non-local means (Buades et al., CVPR 2005) via OpenCV; strength from the estimated noise σ."""
    import cv2
    from skimage.restoration import estimate_sigma

    def fn(u8):
        sigma = float(np.mean(estimate_sigma(u8.astype(np.float32), channel_axis=-1))) if u8.shape[-1] > 1 \
            else float(estimate_sigma(u8[..., 0].astype(np.float32)))
        h = float(np.clip(1.2 * sigma, 3.0, 40.0))
        if u8.shape[-1] == 1:
            return cv2.fastNlMeansDenoising(u8[..., 0], None, h, 7, 21)
        return cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(u8), None, h, h, 7, 21)

    return _per_image(image, fn)


def classical_clahe(image: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994) on Lab lightness."""
    import cv2

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))

    def fn(u8):
        if gamma != 1.0:
            u8 = np.clip(255.0 * (u8 / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
        if u8.shape[-1] == 1:
            return clahe.apply(np.ascontiguousarray(u8[..., 0]))
        lab = cv2.cvtColor(np.ascontiguousarray(u8), cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)

    return _per_image(image, fn)


def classical_sharpen(image: torch.Tensor, sigma: float = 1.5, amount: float = 1.0) -> torch.Tensor:
    """Unsharp masking: ``x + amount * (x - G_sigma * x)``, clipped to 0..1."""
    import cv2

    arr = image.detach().cpu().float().numpy()
    out = arr.copy()
    c = arr.shape[-1]
    n = 3 if c == 4 else c
    for i in range(arr.shape[0]):
        x = arr[i, ..., :n]
        blur = cv2.GaussianBlur(x, (0, 0), sigma)
        if blur.ndim == 2:
            blur = blur[..., None]
        out[i, ..., :n] = x + amount * (x - blur)
    return torch.from_numpy(np.clip(out, 0, 1).astype(np.float32))


def lanczos_resize(image: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Lanczos-4 resampling (OpenCV ``INTER_LANCZOS4``) of every image; all channels incl. alpha."""
    import cv2

    arr = image.detach().cpu().float().numpy()
    outs = []
    for a in arr:
        r = cv2.resize(a, (int(out_w), int(out_h)), interpolation=cv2.INTER_LANCZOS4)
        if r.ndim == 2:
            r = r[..., None]
        outs.append(r)
    return torch.from_numpy(np.clip(np.stack(outs), 0, 1).astype(np.float32))


def resample(image: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Resize ``[B,H,W,C]`` to ``out_h x out_w``: antialiased bicubic (area-like when shrinking)."""
    if image.shape[1] == out_h and image.shape[2] == out_w:
        return image
    x = image.permute(0, 3, 1, 2)
    y = torch.nn.functional.interpolate(x, size=(int(out_h), int(out_w)), mode="bicubic",
                                        align_corners=False, antialias=True)
    return y.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


# --- nodes ---------------------------------------------------------------------------------------
class RestoreKitRealESRGAN(_ModelNode):
    FAMILY = "realesrgan"
    DESCRIPTION = (
        "Real-ESRGAN super-resolution (Wang et al., ICCVW 2021) from official files in "
        "models/upscale_models: RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, realesr-general-x4v3 "
        "(BSD-3-Clause). denoise_strength blends realesr-general-x4v3 with its realesr-general-wdn-x4v3 "
        "twin (same folder). output_scale resamples the network output (e.g. x2 from a x4 model)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": image_input()}
        req.update(_common_inputs("upscale_models", "Real-ESRGAN", archs=("ESRGAN", "Compact")))
        req["output_scale"] = float_input(0.0, 0.0, 8.0, 0.25,
                                          "Final scale relative to the input. 0 = the model's own scale (x4); "
                                          "other values resample the model output (antialiased bicubic).")
        req["denoise_strength"] = float_input(1.0, 0.0, 1.0, 0.05,
                                              "realesr-general-x4v3 only: 1 = full denoising (general-x4v3), "
                                              "0 = keep noise (general-wdn-x4v3); between blends the two weight sets.")
        return {"required": req}

    def _load(self, path, opts):
        from ..scripts.inference import zoo

        return zoo.load("realesrgan", path, denoise_strength=opts["denoise_strength"])

    def _classical(self, image, opts):
        s = opts["output_scale"] or 4.0
        return lanczos_resize(image, round(image.shape[1] * s), round(image.shape[2] * s)), f"Lanczos x{s:g}"

    def restore(self, image, model_name, device="auto", tile=0, overlap=0, precision="auto", fallback=False,
                fallback_model=NONE, output_scale=0.0, denoise_strength=1.0):
        image = check_image(image)
        opts = {"output_scale": float(output_scale), "denoise_strength": float(denoise_strength)}
        with timed() as t:
            out, res = self._run_chain(image, model_name, device, tile, overlap, precision, fallback,
                                       fallback_model, opts)
            native = res["handle"].scale if res["handle"] is not None else None
            target = float(output_scale) if output_scale else float(native or 4)
            th, tw = round(image.shape[1] * target), round(image.shape[2] * target)
            resampled = out.shape[1] != th or out.shape[2] != tw
            out = resample(out, th, tw) if resampled else out
        fields = {"output scale": f"x{target:g}" + (f" (model x{native}, resampled)" if resampled and native else ""),
                  "denoise strength": float(denoise_strength)}
        return (out, self._info("Real-ESRGAN", res, fields, t["seconds"]))


class RestoreKitSCUNet(_ModelNode):
    FAMILY = "scunet"
    DESCRIPTION = (
        "SCUNet blind denoising (Zhang et al., Machine Intelligence Research 2023; Apache-2.0) from "
        "scunet_color_real_psnr.pth / scunet_color_real_gan.pth in models/upscale_models. Pads to a "
        "multiple of 64 by replication as the official code does; tiles are multiples of 64 with >= 64 px "
        "overlap."
    )

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": image_input()}
        req.update(_common_inputs("upscale_models", "SCUNet", archs=("SCUNet",)))
        return {"required": req}

    def _prepare(self, handle, opts):
        return handle, {"min_tile": 3 * 64}

    def _classical(self, image, opts):
        return classical_denoise(image), "non-local means (OpenCV)"

    def restore(self, image, model_name, device="auto", tile=0, overlap=0, precision="auto", fallback=False,
                fallback_model=NONE):
        from ..scripts.inference.zoo import SCUNET_MIN_OVERLAP, SCUNET_TILE_MULTIPLE

        image = check_image(image)
        m = SCUNET_TILE_MULTIPLE
        tile = int(tile)
        if tile:
            tile = max(3 * m, -(-tile // m) * m)  # a multiple of 64 with room for a 64 px overlap
        overlap = max(int(overlap), SCUNET_MIN_OVERLAP)
        with timed() as t:
            out, res = self._run_chain(image, model_name, device, tile, overlap, precision, fallback,
                                       fallback_model, {})
        return (out, self._info("SCUNet", res, {"tile rule": "multiple of 64, overlap >= 64"}, t["seconds"]))


class RestoreKitSFHformer(_ModelNode):
    FAMILY = "sfhformer"
    DESCRIPTION = (
        "SFHformer (Jiang et al., ECCV 2024; MIT) on the official released weights in models/restorekit: "
        "dehazing (sfhformer_haze_its.pth indoor, sfhformer_haze_ots.pth outdoor), low-light "
        "(sfhformer_11211_lolv2s.pth, sfhformer_22422_lolv2r.pth), GoPro motion deblurring. Pads to a "
        "multiple of 8 and crops back. Its Fourier branch sees the whole image, so tiles can leave faint seams."
    )

    @classmethod
    def INPUT_TYPES(cls):
        from_zoo = ["auto", "dehaze-indoor", "dehaze-outdoor", "low-light", "motion-deblur"]
        req = {"image": image_input()}
        req.update(_common_inputs("restorekit", "SFHformer"))
        req["task"] = choice_input(from_zoo, "Which released weights the file holds. auto: from the weights "
                                             "(and 'its' in the file name for indoor dehazing, which runs "
                                             "without the Fourier BatchNorm as officially evaluated).")
        return {"required": req}

    def _load(self, path, opts):
        from ..scripts.inference import zoo

        return zoo.load("sfhformer", path, task=opts["task"])

    def _classical(self, image, opts):
        task = opts["task"]
        if task == "motion-deblur":
            return classical_sharpen(image), "unsharp mask (sigma 1.5, amount 1)"
        if task == "low-light":
            return classical_clahe(image, gamma=0.6), "gamma 0.6 + CLAHE on Lab lightness"
        return classical_clahe(image), "CLAHE on Lab lightness"

    def restore(self, image, model_name, device="auto", tile=0, overlap=0, precision="auto", fallback=False,
                fallback_model=NONE, task="auto"):
        image = check_image(image)
        with timed() as t:
            out, res = self._run_chain(image, model_name, device, tile, overlap, precision, fallback,
                                       fallback_model, {"task": task})
        variant = res["note"] or task
        return (out, self._info("SFHformer", res, {"task": task, "variant": variant}, t["seconds"]))


class RestoreKitNoiseDA(_ModelNode):
    FAMILY = "noise_da"
    DESCRIPTION = (
        "Noise-DA restoration network (Liao et al., ICLR 2025) on the official denoise / derain / deblur "
        "checkpoints in models/restorekit (only the restoration U-Net is used). LICENCE: " + NOISE_DA_LICENSE
    )

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": image_input()}
        req.update(_common_inputs("restorekit", "Noise-DA"))
        req["task"] = choice_input(["denoise", "derain", "deblur"],
                                   "Which checkpoint this is (the network is the same; the choice labels info "
                                   "and picks the classical fallback).")
        req["accept_license"] = bool_input(False, NOISE_DA_LICENSE)
        return {"required": req}

    def _classical(self, image, opts):
        if opts["task"] == "deblur":
            return classical_sharpen(image), "unsharp mask (sigma 1.5, amount 1)"
        return classical_denoise(image), "non-local means (OpenCV)"

    def restore(self, image, model_name, device="auto", tile=0, overlap=0, precision="auto", fallback=False,
                fallback_model=NONE, task="denoise", accept_license=False):
        if not accept_license:
            raise ValueError("Noise-DA: accept_license is false. " + NOISE_DA_LICENSE)
        image = check_image(image)
        with timed() as t:
            out, res = self._run_chain(image, model_name, device, tile, overlap, precision, fallback,
                                       fallback_model, {"task": task})
        return (out, self._info("Noise-DA", res, {"task": task, "licence": "NTU S-Lab 1.0, non-commercial (accepted)"},
                                t["seconds"]))


NODE_CLASS_MAPPINGS = {
    "RestoreKitRealESRGAN": RestoreKitRealESRGAN,
    "RestoreKitSCUNet": RestoreKitSCUNet,
    "RestoreKitSFHformer": RestoreKitSFHformer,
    "RestoreKitNoiseDA": RestoreKitNoiseDA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitRealESRGAN": "Real-ESRGAN Upscale",
    "RestoreKitSCUNet": "SCUNet Denoise",
    "RestoreKitSFHformer": "SFHformer Restore",
    "RestoreKitNoiseDA": "Noise-DA Restore (non-commercial)",
}
