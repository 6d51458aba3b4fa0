"""Recognise which network an ncnn graph is and turn its weights into that network's state dict.

Each family has a detector that reads the architecture's hyper-parameters from the graph (layer
types, channel counts, kernel sizes, upscale factors) and the list of parameter *slots* of the target
network in execution order.  ncnn converters write layers in execution order, and the ``.bin`` holds
the arrays of the weighted layers in the same order, so the i-th weighted layer fills the i-th slot;
every shape is checked, and a mismatch is refused naming the layer and both shapes.

=============  ================================  =======================  ==========================
family         networks (examples)               loads through            state-dict keys
=============  ================================  =======================  ==========================
ESRGAN         RealESRGAN_x4plus, x4plus_anime   spandrel ``ESRGAN``      basicsr (conv_first, body.N.rdbK.convJ, ...)
               6B, RealSR DF2K (RRDBNet)
Compact        realesr-animevideov3              spandrel ``Compact``     body.N (SRVGGNetCompact)
               (SRVGGNetCompact)
DRUNet         DPIR drunet_color / gray /        spandrel ``DRUNet``      KAIR (m_head, m_down1.N.res.K, ...)
               deblocking (noise-level input)
SPAN           spanx2/x4 ch48/ch52, community    spandrel ``SPAN``        conv_1.{sk,conv.N,eval_conv}, ...
               SPAN models (reparameterised)
waifu2x        upconv_7 photo / anime x2         scripts/archs/waifu2x    convs.N, up
Real-CUGAN     se / pro x2, x3, x4 (with SE      spandrel ``RealCUGAN``   unet1.*, unet2.*, conv_final
               blocks; "pro" from the name)
=============  ================================  =======================  ==========================

Not importable (refused with the reason): Real-CUGAN "nose" (no SE blocks), waifu2x CUNet, SRMD (its
degradation-map PCA lives in the C++ wrapper), RRDBNet with grow channels other than 32, int8 models.

Layout conversions: ncnn convolution weights are ``[out, in/groups, kh, kw]`` like torch; ncnn
deconvolution weights are ``[out, in, kh, kw]`` where torch ``ConvTranspose2d`` wants ``[in, out,
kh, kw]`` (measured against the ncnn runtime); ``InnerProduct`` ``[out, in]`` becomes a 1x1 conv.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .ncnn_format import NcnnFormatError, NcnnGraph, NcnnLayer


class UnknownGraphError(NcnnFormatError):
    """No family recognises the graph; the message lists what the graph holds."""


@dataclass
class Slot:
    """One weighted layer of the target network: state-dict key prefix, kind and shape."""

    key: str
    kind: str  # "conv", "deconv", "prelu", "linear-as-conv"
    shape: Tuple[int, ...]
    bias: bool = True


@dataclass
class Detected:
    family: str  # our family name
    arch: str  # spandrel architecture id or ours
    config: Dict[str, object]
    slots: List[Slot]
    via: str  # "spandrel" or "scripts/archs/<module>"
    skip_leading: int = 0  # weighted layers before the first slot that hold constants (checked)
    notes: List[str] = field(default_factory=list)
    scale: int = 1
    graph_scale: float = 0.0  # the scale of the whole ncnn graph when it resizes after the network
    extra_input: str = ""  # e.g. "noise level map (sigma/255) as the last input channel"


def _conv_shape(l: NcnnLayer) -> Tuple[int, int, int, int]:
    """``[out, in/groups, kh, kw]`` of a Convolution layer from its parameters."""
    out = int(l.p(0))
    kw = int(l.p(1))
    kh = int(l.p(11, kw))
    n = int(l.p(6))
    if out <= 0 or kw <= 0 or n % (out * kh * kw):
        raise NcnnFormatError(f"{l.describe()}: weight_data_size {n} is not a multiple of num_output x kernel")
    return out, n // (out * kh * kw), kh, kw


def _fill(graph: NcnnGraph, det: Detected) -> Dict[str, torch.Tensor]:
    """Fill the slots of ``det`` from the weighted layers of ``graph`` (shape-checked)."""
    layers = graph.weighted()[det.skip_leading:]
    if len(layers) != len(det.slots):
        raise NcnnFormatError(
            f"ncnn graph '{graph.source}' looks like {det.family} {det.config} but has {len(layers)} weighted "
            f"layers where that network has {len(det.slots)}")
    sd: Dict[str, torch.Tensor] = {}
    dtype = torch.float16 if graph.storage == "fp16" else torch.float32
    for l, s in zip(layers, det.slots):
        w = l.weights.get("weight")
        if s.kind in ("conv", "deconv", "linear-as-conv"):
            want_type = {"conv": ("Convolution",), "deconv": ("Deconvolution",),
                         "linear-as-conv": ("InnerProduct", "Convolution")}[s.kind]
            if l.type not in want_type:
                raise NcnnFormatError(f"{l.describe()} stands where {det.family} has '{s.key}' ({s.kind} {s.shape})")
            if s.kind == "deconv":
                o, i, kh, kw = s.shape[1], s.shape[0], s.shape[2], s.shape[3]
                if w.size != o * i * kh * kw:
                    raise NcnnFormatError(f"shape mismatch at {l.describe()}: {w.size} weights, '{s.key}' needs "
                                          f"{s.shape} ({int(np.prod(s.shape))})")
                t = torch.from_numpy(w.reshape(o, i, kh, kw).transpose(1, 0, 2, 3).copy())
            else:
                if w.size != int(np.prod(s.shape)):
                    raise NcnnFormatError(f"shape mismatch at {l.describe()}: {w.size} weights, '{s.key}' needs "
                                          f"{s.shape} ({int(np.prod(s.shape))})")
                if l.type == "Convolution":
                    got = _conv_shape(l)
                    if tuple(got) != tuple(s.shape):
                        raise NcnnFormatError(f"shape mismatch at {l.describe()}: [out, in, kh, kw] = {list(got)}, "
                                              f"'{s.key}' needs {list(s.shape)}")
                t = torch.from_numpy(w.reshape(s.shape).copy())
            sd[s.key + ".weight"] = t.to(dtype if l.storage == "fp16" else torch.float32)
            has_bias = "bias" in l.weights
            if s.bias != has_bias:
                raise NcnnFormatError(f"{l.describe()} {'has' if has_bias else 'lacks'} a bias where {det.family} "
                                      f"'{s.key}' {'has none' if has_bias else 'has one'}")
            if has_bias:
                sd[s.key + ".bias"] = torch.from_numpy(l.weights["bias"].copy())
        elif s.kind == "prelu":
            if l.type != "PReLU":
                raise NcnnFormatError(f"{l.describe()} stands where {det.family} has PReLU '{s.key}'")
            slope = l.weights["slope"]
            if slope.size != int(np.prod(s.shape)):
                raise NcnnFormatError(f"shape mismatch at {l.describe()}: {slope.size} slopes, '{s.key}' needs {s.shape}")
            sd[s.key + ".weight"] = torch.from_numpy(slope.reshape(s.shape).copy())
        else:  # pragma: no cover - programming error
            raise ValueError(s.kind)
    return sd


def _interp_scale(l: NcnnLayer) -> float:
    return float(l.p(1, 1.0))


# --- ESRGAN / RRDBNet ------------------------------------------------------------------------------
def detect_esrgan(graph: NcnnGraph) -> Optional[Detected]:
    types = graph.type_counts()
    if not {"Concat", "Eltwise", "Convolution"} <= set(types):
        return None
    if set(types) - {"Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}:
        return None
    convs = graph.of_type("Convolution")
    ups = [l for l in graph.of_type("Interp") if int(l.p(0)) == 1 and _interp_scale(l) == 2.0]
    nup = len(ups)
    n = len(convs)
    if (n - 4 - nup) % 15 or n < 19 + nup:
        return None
    nb = (n - 4 - nup) // 15
    in_nc = _conv_shape(convs[0])[1]
    nf = int(convs[0].p(0))
    gc = int(convs[1].p(0))
    out_nc = int(convs[-1].p(0))
    if gc != 32:
        raise NcnnFormatError(f"ncnn graph '{graph.source}' is an RRDBNet with {gc} grow channels; spandrel's "
                              f"ESRGAN (and every released Real-ESRGAN/ESRGAN model) uses 32")
    slots = [Slot("conv_first", "conv", (nf, in_nc, 3, 3))]
    for b in range(nb):
        for r in (1, 2, 3):
            for c in range(1, 6):
                cin = nf + (c - 1) * gc
                slots.append(Slot(f"body.{b}.rdb{r}.conv{c}", "conv", (gc if c < 5 else nf, cin, 3, 3)))
    slots.append(Slot("conv_body", "conv", (nf, nf, 3, 3)))
    for u in range(nup):
        slots.append(Slot(f"conv_up{u + 1}", "conv", (nf, nf, 3, 3)))
    slots += [Slot("conv_hr", "conv", (nf, nf, 3, 3)), Slot("conv_last", "conv", (out_nc, nf, 3, 3))]
    return Detected("ESRGAN", "ESRGAN", {"in_nc": in_nc, "out_nc": out_nc, "num_feat": nf, "num_grow_ch": gc,
                                         "num_block": nb}, slots, "spandrel", scale=2 ** nup)


# --- Compact / SRVGGNetCompact ------------------------------------------------------------------------
def detect_compact(graph: NcnnGraph) -> Optional[Detected]:
    types = graph.type_counts()
    if set(types) - {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp"}:
        return None
    if not {"Convolution", "PReLU", "PixelShuffle"} <= set(types):
        return None
    weighted = graph.weighted()
    kinds = [l.type for l in weighted]
    expect = ["Convolution", "PReLU"] * (len(kinds) // 2) + ["Convolution"]
    if kinds != expect[:len(kinds)] or len(kinds) % 2 == 0:
        return None
    convs = [l for l in weighted if l.type == "Convolution"]
    shuffles = graph.of_type("PixelShuffle")
    if len(shuffles) != 1:
        return None
    upscale = int(shuffles[0].p(0))
    nf = int(convs[0].p(0))
    in_nc = _conv_shape(convs[0])[1]
    out_nc = int(convs[-1].p(0)) // (upscale * upscale)
    num_conv = len(convs) - 2
    slots: List[Slot] = [Slot("body.0", "conv", (nf, in_nc, 3, 3)), Slot("body.1", "prelu", (nf,))]
    idx = 2
    for _ in range(num_conv):
        slots += [Slot(f"body.{idx}", "conv", (nf, nf, 3, 3)), Slot(f"body.{idx + 1}", "prelu", (nf,))]
        idx += 2
    slots.append(Slot(f"body.{idx}", "conv", (out_nc * upscale * upscale, nf, 3, 3)))
    det = Detected("Compact", "Compact", {"num_in_ch": in_nc, "num_out_ch": out_nc, "num_feat": nf,
                                          "num_conv": num_conv, "upscale": upscale}, slots, "spandrel", scale=upscale)
    # a trailing Interp after the residual add resizes the network's output inside the graph
    last = graph.layers[-1]
    if last.type == "Interp" and graph.layers[-2].type == "BinaryOp":
        det.graph_scale = upscale * _interp_scale(last)
        det.notes.append(f"the graph resizes the x{upscale} network output by {_interp_scale(last):g} "
                         f"(bicubic, inside the graph) to x{det.graph_scale:g}; imported: the x{upscale} network")
    return det


# --- DRUNet (DPIR) ------------------------------------------------------------------------------------
def detect_drunet(graph: NcnnGraph) -> Optional[Detected]:
    types = graph.type_counts()
    if set(types) - {"Input", "Split", "Convolution", "Deconvolution", "BinaryOp", "ReLU"}:
        return None
    deconvs = graph.of_type("Deconvolution")
    downs = [l for l in graph.of_type("Convolution") if int(l.p(1)) == 2 and int(l.p(3, 1)) == 2]
    if len(deconvs) != 3 or len(downs) != 3:
        return None
    convs = graph.of_type("Convolution")
    # head, 7 stages (3 down, body, 3 up) x nb resblocks x 2 convs, 3 strided downs, tail: 5 + 14 nb convs
    n3 = len(convs) - 2 - 3
    if n3 % 14 or n3 == 0:
        return None
    nb = n3 // 14
    in_nc = _conv_shape(convs[0])[1]
    out_nc = int(convs[-1].p(0))
    nc = [int(convs[0].p(0))] + [int(d.p(0)) for d in downs]
    slots = [Slot("m_head", "conv", (nc[0], in_nc, 3, 3), False)]

    def res(prefix, c):
        out = []
        for i in range(nb):
            out += [Slot(f"{prefix}.{i}.res.0", "conv", (c, c, 3, 3), False),
                    Slot(f"{prefix}.{i}.res.2", "conv", (c, c, 3, 3), False)]
        return out

    for lvl in (1, 2, 3):
        slots += res(f"m_down{lvl}", nc[lvl - 1])
        slots.append(Slot(f"m_down{lvl}.{nb}", "conv", (nc[lvl], nc[lvl - 1], 2, 2), False))
    slots += res("m_body", nc[3])
    for lvl in (3, 2, 1):
        slots.append(Slot(f"m_up{lvl}.0", "deconv", (nc[lvl], nc[lvl - 1], 2, 2), False))
        slots += [Slot(f"m_up{lvl}.{i + 1}.res.{j}", "conv", (nc[lvl - 1], nc[lvl - 1], 3, 3), False)
                  for i in range(nb) for j in (0, 2)]
    slots.append(Slot("m_tail", "conv", (out_nc, nc[0], 3, 3), False))
    det = Detected("DRUNet", "DRUNet", {"in_nc": in_nc, "out_nc": out_nc, "nc": nc, "nb": nb}, slots, "spandrel",
                   extra_input="noise level map sigma/255 as the last input channel")
    return det


# --- SPAN -------------------------------------------------------------------------------------------
SPAN_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SPAN_IMG_RANGE = 255.0


def detect_span(graph: NcnnGraph) -> Optional[Detected]:
    types = graph.type_counts()
    if not {"Swish", "Sigmoid", "PixelShuffle", "Convolution"} <= set(types):
        return None
    if set(types) - {"Input", "MemoryData", "BinaryOp", "Convolution", "Split", "Swish", "Sigmoid", "Concat",
                     "PixelShuffle"}:
        return None
    weighted = graph.weighted()
    lead = 0
    notes = []
    if weighted and weighted[0].type == "MemoryData":
        mean = weighted[0].weights.get("data", np.asarray(SPAN_RGB_MEAN))  # checked once the .bin is read
        if mean.size != 3 or not np.allclose(mean, SPAN_RGB_MEAN, atol=1e-4):
            raise NcnnFormatError(f"SPAN graph '{graph.source}' subtracts mean {mean.tolist()}, not the "
                                  f"{list(SPAN_RGB_MEAN)} spandrel's SPAN uses")
        muls = [l for l in graph.of_type("BinaryOp") if int(l.p(0)) == 2 and int(l.p(1, 0)) == 1]
        if not muls or abs(float(muls[0].p(2)) - SPAN_IMG_RANGE) > 1e-3:
            raise NcnnFormatError(f"SPAN graph '{graph.source}' does not scale its input by {SPAN_IMG_RANGE:g}")
        lead = 1
        norm = True
    else:
        norm = False
    convs = [l for l in weighted[lead:]]
    if any(l.type != "Convolution" for l in convs):
        return None
    nblocks = (len(convs) - 4) // 3
    if len(convs) != 4 + 3 * nblocks or nblocks < 1:
        return None
    shuffle = graph.of_type("PixelShuffle")[0]
    upscale = int(shuffle.p(0))
    in_nc = _conv_shape(convs[0])[1]
    f = int(convs[0].p(0))
    out_nc = int(convs[-1].p(0)) // (upscale * upscale)
    slots = [Slot("conv_1", "conv", (f, in_nc, 3, 3))]
    for b in range(1, nblocks + 1):
        slots += [Slot(f"block_{b}.c{i}_r", "conv", (f, f, 3, 3)) for i in (1, 2, 3)]
    slots += [Slot("conv_2", "conv", (f, f, 3, 3)), Slot("conv_cat", "conv", (f, 4 * f, 1, 1)),
              Slot("upsampler.0", "conv", (out_nc * upscale * upscale, f, 3, 3))]
    if nblocks != 6:
        return None
    return Detected("SPAN", "SPAN", {"num_in_ch": in_nc, "num_out_ch": out_nc, "feature_channels": f,
                                     "upscale": upscale, "norm": norm}, slots, "spandrel", skip_leading=lead,
                    notes=notes, scale=upscale)


def span_training_branches(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Expand the re-parameterised 3x3 convs of SPAN into the training branches spandrel rebuilds them from.

    spandrel's ``Conv3XC`` recomputes ``eval_conv`` from ``sk`` (1x1) and ``conv`` (1x1 -> 3x3 -> 1x1,
    gain 2) at every forward, so the exported 3x3 kernel ``W, b`` is written as ``conv.0 = [I; 0]``,
    ``conv.1 = [[W, 0], [0, 0]]`` with bias ``[b; 0]``, ``conv.2 = [I, 0]`` and ``sk = 0``; the merge is
    exact (identity and zero products).
    """
    out: Dict[str, torch.Tensor] = {}
    gain = 2
    for key, w in sd.items():
        if not key.endswith(".weight") or key.startswith(("conv_cat", "upsampler")):
            if not key.endswith(".bias") or key.startswith(("conv_cat", "upsampler")):
                out[key] = w
            continue
        prefix = key[: -len(".weight")]
        b = sd[prefix + ".bias"].float()
        w = w.float()
        co, ci = w.shape[:2]
        eye_in = torch.zeros(ci * gain, ci, 1, 1)
        eye_in[:ci, :, 0, 0] = torch.eye(ci)
        mid = torch.zeros(co * gain, ci * gain, 3, 3)
        mid[:co, :ci] = w
        mid_b = torch.zeros(co * gain)
        mid_b[:co] = b
        eye_out = torch.zeros(co, co * gain, 1, 1)
        eye_out[:, :co, 0, 0] = torch.eye(co)
        out.update({
            f"{prefix}.sk.weight": torch.zeros(co, ci, 1, 1), f"{prefix}.sk.bias": torch.zeros(co),
            f"{prefix}.conv.0.weight": eye_in, f"{prefix}.conv.0.bias": torch.zeros(ci * gain),
            f"{prefix}.conv.1.weight": mid, f"{prefix}.conv.1.bias": mid_b,
            f"{prefix}.conv.2.weight": eye_out, f"{prefix}.conv.2.bias": torch.zeros(co),
            f"{prefix}.eval_conv.weight": w.clone(), f"{prefix}.eval_conv.bias": b.clone(),
        })
    return out


# --- waifu2x UpConv7 ------------------------------------------------------------------------------
def detect_waifu2x_upconv7(graph: NcnnGraph) -> Optional[Detected]:
    types = graph.type_counts()
    if set(types) != {"Input", "Convolution", "Deconvolution"}:
        return None
    convs = graph.of_type("Convolution")
    deconv = graph.of_type("Deconvolution")
    if len(convs) != 6 or len(deconv) != 1 or graph.layers[-1] is not deconv[0]:
        return None
    d = deconv[0]
    if (int(d.p(1)), int(d.p(3, 1)), int(d.p(4, 0))) != (4, 2, 3) or any(int(c.p(4, 0)) for c in convs):
        return None
    from ..archs import waifu2x

    in_nc = _conv_shape(convs[0])[1]
    widths = [int(c.p(0)) for c in convs]
    chans = [in_nc] + widths
    slots = [Slot(f"convs.{i}", "conv", (chans[i + 1], chans[i], 3, 3)) for i in range(6)]
    out_nc = int(d.p(0))
    slots.append(Slot("up", "deconv", (widths[-1], out_nc, 4, 4)))
    return Detected("waifu2x-upconv7", "waifu2x UpConv7", {"in_channels": in_nc, "out_channels": out_nc,
                                                           "widths": widths}, slots, "scripts/archs/waifu2x",
                    scale=waifu2x.UpConv7.scale,
                    notes=[f"input padded by {waifu2x.PREPADDING} px (edge replication) inside the network"])


# --- Real-CUGAN ------------------------------------------------------------------------------------
#: input padding the Real-CUGAN graphs expect around the image (spandrel / the official code: reflection)
REALCUGAN_PREPAD = {2: 18, 3: 14, 4: 19}


def detect_realcugan(graph: NcnnGraph) -> Optional[Detected]:
    """Real-CUGAN (bilibili, MIT) UpCunet2x/3x/4x: the inner network of the ncnn graphs, which take
    the image padded by :data:`REALCUGAN_PREPAD` and leave the crop (and for x4 the nearest-neighbour
    residual) to the caller, exactly what spandrel's ``UpCunet*x.forward`` does around the same modules.
    The "pro" models (input range 0.15..0.85) have the same graph: they are recognised by "pro" in
    the file or folder name."""
    types = graph.type_counts()
    if set(types) - {"Input", "Convolution", "Split", "Pooling", "InnerProduct", "BinaryOp", "Crop",
                     "Deconvolution", "PixelShuffle"}:
        return None
    if types.get("Crop", 0) < 4 or types.get("Deconvolution", 0) != 4:
        return None
    if types.get("InnerProduct", 0) != 8:
        raise NcnnFormatError(f"ncnn graph '{graph.source}' is a Real-CUGAN without squeeze-excitation blocks "
                              f"(the 'no-se' / 'nose' models): spandrel's RealCUGAN always has them")
    convs = graph.of_type("Convolution")
    deconvs = graph.of_type("Deconvolution")
    ips = graph.of_type("InnerProduct")
    in_nc = _conv_shape(convs[0])[1]
    bottom = deconvs[1]  # unet1.conv_bottom
    k = int(bottom.p(1))
    shuffle = graph.of_type("PixelShuffle")
    scale = 4 if shuffle else {4: 2, 5: 3}.get(k, 0)
    if not scale:
        return None
    u1_out = int(bottom.p(0))
    out_nc = int(convs[-1].p(0)) // 4 if scale == 4 else int(convs[-1].p(0))
    it_c, it_d, it_i = iter(convs), iter(deconvs), iter(ips)

    def c(key):
        l = next(it_c)
        return Slot(key, "conv", _conv_shape(l))

    def d(key, cin):
        l = next(it_d)
        kk = int(l.p(1))
        return Slot(key, "deconv", (cin, int(l.p(0)), int(l.p(11, kk)), kk))

    def se(prefix):
        a, b = next(it_i), next(it_i)
        return [Slot(f"{prefix}.seblock.conv1", "linear-as-conv", (int(a.p(0)), int(a.p(2)) // int(a.p(0)), 1, 1)),
                Slot(f"{prefix}.seblock.conv2", "linear-as-conv", (int(b.p(0)), int(b.p(2)) // int(b.p(0)), 1, 1))]

    s = [c("unet1.conv1.conv.0"), c("unet1.conv1.conv.2"), c("unet1.conv1_down"), c("unet1.conv2.conv.0"),
         c("unet1.conv2.conv.2")] + se("unet1.conv2") + [d("unet1.conv2_up", 64), c("unet1.conv3"),
                                                          d("unet1.conv_bottom", 64)]
    s += [c("unet2.conv1.conv.0"), c("unet2.conv1.conv.2"), c("unet2.conv1_down"), c("unet2.conv2.conv.0"),
          c("unet2.conv2.conv.2")] + se("unet2.conv2") + [c("unet2.conv2_down"), c("unet2.conv3.conv.0"),
                                                           c("unet2.conv3.conv.2")] + se("unet2.conv3")
    s += [d("unet2.conv3_up", 128), c("unet2.conv4.conv.0"), c("unet2.conv4.conv.2")] + se("unet2.conv4")
    s += [d("unet2.conv4_up", 64), c("unet2.conv5"), c("unet2.conv_bottom")]
    if scale == 4:
        s.append(c("conv_final"))
    name = graph.source.replace("\\", "/").lower()
    pro = "pro" in [t for part in name.split("/")[-2:] for t in part.replace("-", "_").replace(".", "_").split("_")]
    det = Detected("RealCUGAN", "RealCUGAN", {"in_channels": in_nc, "out_channels": out_nc, "scale": scale,
                                              "pro": pro, "unet1_out": u1_out}, s, "spandrel", scale=scale,
                   notes=[f"the graph takes the image padded by {REALCUGAN_PREPAD[scale]} px"
                          + ("; pro model (recognised from its name): input range 0.15..0.85" if pro else "")])
    return det


DETECTORS: Sequence[Callable[[NcnnGraph], Optional[Detected]]] = (
    detect_esrgan, detect_compact, detect_drunet, detect_span, detect_waifu2x_upconv7, detect_realcugan)
FAMILIES = ("ESRGAN (RRDBNet)", "Compact (SRVGGNetCompact)", "DRUNet", "SPAN", "waifu2x UpConv7",
            "Real-CUGAN (with SE)")


def detect(graph: NcnnGraph) -> Detected:
    """The family of ``graph`` with its hyper-parameters, or :class:`UnknownGraphError`."""
    for fn in DETECTORS:
        det = fn(graph)
        if det is not None:
            return det
    raise UnknownGraphError(
        f"ncnn graph '{graph.source}' is not a network the importer knows: it holds {graph.summary()}. "
        f"Known families: {', '.join(FAMILIES)}")


def state_dict_for(graph: NcnnGraph, det: Detected) -> Dict[str, torch.Tensor]:
    """The state dict of the detected network, in the key format its loader expects."""
    sd = _fill(graph, det)
    if det.family == "SPAN":
        sd = span_training_branches(sd)
    if det.family == "RealCUGAN" and det.config.get("pro"):
        sd["pro"] = torch.zeros(1)
    return sd
