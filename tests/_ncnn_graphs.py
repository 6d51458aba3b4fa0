"""Small ncnn graphs the tests write themselves: torch networks with random weights, exported by hand
into executable ``.param``/``.bin`` pairs (fp32 or fp16 storage) the way ncnn's converters lay them out.

Each ``write_*`` returns ``(param_path, bin_path, torch_module)``; the torch module is the reference
network (spandrel's class for ESRGAN/Compact/DRUNet, ours for waifu2x), so a round trip can compare
weights and outputs, and the ncnn runtime can run the same files independently.
"""
import os
from typing import Dict, List, Tuple

import numpy as np
import torch

from restorekit.scripts.inference.ncnn_format import MAGIC, encode_array, format_layer


class GraphWriter:
    """Collects layers; inserts ncnn ``Split`` layers for blobs read more than once; writes the pair."""

    def __init__(self, storage: str = "fp32"):
        self.layers: List[list] = []  # [type, name, inputs, outputs, params, arrays]
        self.storage = storage
        self.n = 0

    def blob(self) -> str:
        self.n += 1
        return f"b{self.n}"

    def add(self, ltype, inputs, params=None, arrays=None, outputs=None) -> str:
        outs = outputs or [self.blob()]
        self.layers.append([ltype, f"{ltype.lower()}_{len(self.layers)}", list(inputs), outs, dict(params or {}),
                            list(arrays or [])])
        return outs[0]

    def input(self) -> str:
        return self.add("Input", [], outputs=["data"])

    def conv(self, x, conv: torch.nn.Conv2d, act: int = 0, slope: float = 0.0) -> str:
        w = conv.weight.detach().numpy()
        p = {0: w.shape[0], 1: w.shape[3], 11: w.shape[2], 3: conv.stride[0], 4: conv.padding[0],
             5: int(conv.bias is not None), 6: int(w.size)}
        if act:
            p[9] = act
            if act == 2:
                p[ARRAY_SLOPE] = [float(slope)]
        arrays = [(w, True)] + ([(conv.bias.detach().numpy(), False)] if conv.bias is not None else [])
        return self.add("Convolution", [x], p, arrays)

    def deconv(self, x, dc: torch.nn.ConvTranspose2d, act: int = 0, slope: float = 0.0) -> str:
        w = dc.weight.detach().numpy().transpose(1, 0, 2, 3)  # torch [in,out,kh,kw] -> ncnn [out,in,kh,kw]
        p = {0: w.shape[0], 1: w.shape[3], 11: w.shape[2], 3: dc.stride[0], 4: dc.padding[0],
             5: int(dc.bias is not None), 6: int(w.size)}
        if act:
            p[9] = act
            if act == 2:
                p[ARRAY_SLOPE] = [float(slope)]
        arrays = [(w, True)] + ([(dc.bias.detach().numpy(), False)] if dc.bias is not None else [])
        return self.add("Deconvolution", [x], p, arrays)

    def write(self, param_path: str, bin_path: str) -> Tuple[str, str]:
        uses: Dict[str, int] = {}
        for l in self.layers:
            for b in l[2]:
                uses[b] = uses.get(b, 0) + 1
        out_layers, data = [], b""
        for l in self.layers:
            ltype, name, ins, outs, params, arrays = l
            out_layers.append(format_layer(ltype, name, ins, outs, params))
            for arr, tagged in arrays:
                data += encode_array(arr, self.storage if tagged else "fp32", tagged)
            for b in outs:
                if uses.get(b, 0) > 1:
                    copies = [f"{b}_s{i}" for i in range(uses[b])]
                    out_layers.append(format_layer("Split", f"split_{b}", [b], copies, {}))
                    k = 0
                    for later in self.layers[self.layers.index(l) + 1:]:
                        for j, src in enumerate(later[2]):
                            if src == b:
                                later[2][j] = copies[k]
                                k += 1
        blobs = set()
        for ln in out_layers:
            t = ln.split()
            nin, nout = int(t[2]), int(t[3])
            blobs.update(t[4 + nin:4 + nin + nout])
        with open(param_path, "w") as f:
            f.write(f"{MAGIC}\n{len(out_layers)} {len(blobs)}\n" + "\n".join(out_layers) + "\n")
        with open(bin_path, "wb") as f:
            f.write(data)
        return param_path, bin_path


ARRAY_SLOPE = 10  # activation_params is parameter id 10 (written as -23310=n,...)


def _randomise(net: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


def _paths(folder, stem):
    return os.path.join(folder, stem + ".param"), os.path.join(folder, stem + ".bin")


def write_compact(folder, storage="fp32", stem="compact", nf=8, num_conv=2, upscale=2, seed=0):
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact

    net = _randomise(SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=nf, num_conv=num_conv, upscale=upscale), seed)
    g = GraphWriter(storage)
    x = g.input()
    h = x
    body = list(net.body)
    for i in range(0, len(body) - 1, 2):
        h = g.conv(h, body[i])
        h = g.add("PReLU", [h], {0: nf}, [(body[i + 1].weight.detach().numpy(), False)])
    h = g.conv(h, body[-1])
    h = g.add("PixelShuffle", [h], {0: upscale})
    base = g.add("Interp", [x], {0: 1, 1: float(upscale), 2: float(upscale)})
    g.add("BinaryOp", [h, base], {0: 0}, outputs=["output"])
    return g.write(*_paths(folder, stem)) + (net,)


def write_esrgan(folder, storage="fp32", stem="esrgan", nf=8, gc=32, nb=1, seed=1):
    """RRDBNet x4 from a random basicsr-layout state dict; the reference is spandrel's network built
    from that state dict."""
    from spandrel import ModelLoader

    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(key, cout, cin):
        sd[key + ".weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * 0.05
        sd[key + ".bias"] = torch.randn(cout, generator=gen) * 0.05

    conv("conv_first", nf, 3)
    for b in range(nb):
        for r in (1, 2, 3):
            for c in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{c}", gc if c < 5 else nf, nf + (c - 1) * gc)
    for k in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(k, nf, nf)
    conv("conv_last", 3, nf)
    net = ModelLoader().load_from_state_dict(dict(sd)).model.eval()

    def c2d(key):
        w = sd[key + ".weight"]
        m = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(sd[key + ".bias"])
        return m

    g = GraphWriter(storage)
    x = g.input()
    fea = g.conv(x, c2d("conv_first"))
    cur = fea
    for b in range(nb):
        inp = cur
        for r in (1, 2, 3):
            feats = [cur]
            for c in range(1, 5):
                cat = feats[0] if len(feats) == 1 else g.add("Concat", feats, {0: 0})
                feats.append(g.conv(cat, c2d(f"body.{b}.rdb{r}.conv{c}"), act=2, slope=0.2))
            x5 = g.conv(g.add("Concat", feats, {0: 0}), c2d(f"body.{b}.rdb{r}.conv5"))
            cur = g.add("Eltwise", [x5, cur], {0: 1, 1: [0.2, 1.0]})
        cur = g.add("Eltwise", [cur, inp], {0: 1, 1: [0.2, 1.0]})
    body = g.conv(cur, c2d("conv_body"))
    h = g.add("BinaryOp", [fea, body], {0: 0})
    for u in (1, 2):
        h = g.add("Interp", [h], {0: 1, 1: 2.0, 2: 2.0})
        h = g.conv(h, c2d(f"conv_up{u}"), act=2, slope=0.2)
    h = g.conv(h, c2d("conv_hr"), act=2, slope=0.2)
    g.conv(h, c2d("conv_last"))
    g.layers[-1][3] = ["output"]
    return g.write(*_paths(folder, stem)) + (net,)


def write_waifu2x(folder, storage="fp32", stem="upconv7", widths=(4, 4, 8, 8, 8, 8), seed=2):
    from restorekit.scripts.archs.waifu2x import UpConv7

    net = _randomise(UpConv7(3, 3, widths), seed, 0.2)
    g = GraphWriter(storage)
    h = g.input()
    for conv in net.convs:
        h = g.conv(h, conv, act=2, slope=0.1)
    g.deconv(h, net.up)
    g.layers[-1][3] = ["output"]
    return g.write(*_paths(folder, stem)) + (net,)


def write_drunet(folder, storage="fp32", stem="drunet", nc=(8, 16, 32, 64), nb=2, seed=3):
    from spandrel.architectures.DRUNet import DRUNet

    net = _randomise(DRUNet(in_nc=4, out_nc=3, nc=list(nc), nb=nb, act_mode="R", downsample_mode="strideconv",
                            upsample_mode="convtranspose"), seed, 0.05)
    g = GraphWriter(storage)
    x = g.input()

    def res_seq(h, seq, start, count):
        for i in range(start, start + count):
            blk = seq[i].res
            t = g.conv(h, blk[0], act=1)
            t = g.conv(t, blk[2])
            h = g.add("BinaryOp", [h, t], {0: 0})
        return h

    x1 = g.conv(x, net.m_head)
    skips = [x1]
    h = x1
    for lvl in (net.m_down1, net.m_down2, net.m_down3):
        h = res_seq(h, lvl, 0, nb)
        h = g.conv(h, lvl[nb])
        skips.append(h)
    h = res_seq(h, net.m_body, 0, nb)
    for lvl, skip in zip((net.m_up3, net.m_up2, net.m_up1), (skips[3], skips[2], skips[1])):
        h = g.add("BinaryOp", [h, skip], {0: 0})
        h = g.deconv(h, lvl[0])
        h = res_seq(h, lvl, 1, nb)
    h = g.add("BinaryOp", [h, skips[0]], {0: 0})
    g.conv(h, net.m_tail)
    g.layers[-1][3] = ["output"]
    return g.write(*_paths(folder, stem)) + (net,)


def random_bin_for(param_path: str, bin_path: str, storage: str = "fp16", seed: int = 0, scale: float = 0.02) -> str:
    """Write a ``.bin`` of random weights that fits ``param_path`` (for real graphs published without
    weights, e.g. vsdpir-ncnn's DRUNet)."""
    from restorekit.scripts.inference.ncnn_format import read_param

    rng = np.random.default_rng(seed)
    g = read_param(param_path)
    data = b""
    for l in g.layers:
        if l.type in ("Convolution", "Deconvolution", "ConvolutionDepthWise", "InnerProduct"):
            n = int(l.p(2 if l.type == "InnerProduct" else 6))
            data += encode_array(rng.normal(0, scale, n), storage)
            if l.p(1 if l.type == "InnerProduct" else 5):
                data += encode_array(rng.normal(0, scale, int(l.p(0))), tagged=False)
        elif l.type == "PReLU":
            data += encode_array(np.full(int(l.p(0)), 0.1), tagged=False)
    with open(bin_path, "wb") as f:
        f.write(data)
    return bin_path


def write_span(folder, storage="fp32", stem="span", f=8, upscale=2, seed=4):
    """SPAN with random training branches; the graph holds the re-parameterised 3x3 convs, as exported."""
    from spandrel.architectures.SPAN import SPAN

    net = _randomise(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=f, upscale=upscale), seed, 0.03)
    with torch.no_grad():
        net(torch.zeros(1, 3, 8, 8))  # eval mode: every Conv3XC folds its branches into eval_conv

    def ev(m):
        return m.eval_conv

    g = GraphWriter(storage)
    x = g.input()
    mean = g.add("MemoryData", [], {0: 1, 1: 1, 2: 3}, [(net.mean.detach().numpy().ravel(), False)])
    h = g.add("BinaryOp", [x, mean], {0: 1})
    h = g.add("BinaryOp", [h], {0: 2, 1: 1, 2: 255.0})
    feat = g.conv(h, ev(net.conv_1))
    cur, out_b1, act6 = feat, None, None
    for b in range(1, 7):
        blk = getattr(net, f"block_{b}")
        a1 = g.add("Swish", [g.conv(cur, ev(blk.c1_r))])
        a2 = g.add("Swish", [g.conv(a1, ev(blk.c2_r))])
        o3 = g.conv(a2, ev(blk.c3_r))
        att = g.add("BinaryOp", [g.add("Sigmoid", [o3])], {0: 1, 1: 1, 2: 0.5})
        cur = g.add("BinaryOp", [g.add("BinaryOp", [o3, cur], {0: 0}), att], {0: 2})
        out_b1 = cur if b == 1 else out_b1
        act6 = a1 if b == 6 else act6
    o6 = g.conv(cur, ev(net.conv_2))
    cat = g.conv(g.add("Concat", [feat, o6, out_b1, act6], {0: 0}), net.conv_cat)
    up = g.conv(cat, net.upsampler[0])
    g.add("PixelShuffle", [up], {0: upscale}, outputs=["output"])
    return g.write(*_paths(folder, stem)) + (net,)


def write_realcugan(folder, storage="fp32", stem="realcugan_up2x", seed=5):
    """Real-CUGAN UpCunet2x (spandrel's modules, random weights) as the inner graph of the ncnn
    releases: input padded by 18 px outside the graph, output = unet2(unet1(x)) + crop(unet1(x), 20)."""
    from spandrel.architectures.RealCUGAN import UpCunet2x

    net = _randomise(UpCunet2x(in_channels=3, out_channels=3), seed, 0.05)
    g = GraphWriter(storage)

    def lconv(x, m):
        return g.conv(x, m, act=2, slope=0.1)

    def unetconv(x, u):
        h = lconv(lconv(x, u.conv[0]), u.conv[2])
        if u.seblock is None:
            return h
        pooled = g.add("Pooling", [h], {0: 1, 4: 1})
        se = u.seblock
        w1, w2 = se.conv1.weight.detach().numpy(), se.conv2.weight.detach().numpy()
        a = g.add("InnerProduct", [pooled], {0: w1.shape[0], 1: 1, 2: w1.size, 9: 1},
                  [(w1.reshape(w1.shape[0], -1), True), (se.conv1.bias.detach().numpy(), False)])
        b = g.add("InnerProduct", [a], {0: w2.shape[0], 1: 1, 2: w2.size, 9: 4},
                  [(w2.reshape(w2.shape[0], -1), True), (se.conv2.bias.detach().numpy(), False)])
        return g.add("BinaryOp", [h, b], {0: 2})

    def crop(x, n):
        return g.add("Crop", [x], {9: [n, n], 10: [-n, -n], 11: [-2, -1]})

    x = g.input()
    u1, u2 = net.unet1, net.unet2
    x1 = unetconv(x, u1.conv1)
    x2 = unetconv(lconv(x1, u1.conv1_down), u1.conv2)
    x2 = g.deconv(x2, u1.conv2_up, act=2, slope=0.1)
    x3 = lconv(g.add("BinaryOp", [crop(x1, 4), x2], {0: 0}), u1.conv3)
    z = g.deconv(x3, u1.conv_bottom)
    y1 = unetconv(z, u2.conv1)
    y2 = unetconv(lconv(y1, u2.conv1_down), u2.conv2)
    y3 = unetconv(lconv(y2, u2.conv2_down), u2.conv3)
    y3 = g.deconv(y3, u2.conv3_up, act=2, slope=0.1)
    y4 = unetconv(g.add("BinaryOp", [crop(y2, 4), y3], {0: 0}), u2.conv4)
    y4 = g.deconv(y4, u2.conv4_up, act=2, slope=0.1)
    y5 = lconv(g.add("BinaryOp", [crop(y1, 16), y4], {0: 0}), u2.conv5)
    out = g.conv(y5, u2.conv_bottom)
    g.add("BinaryOp", [out, crop(z, 20)], {0: 0}, outputs=["output"])
    return g.write(*_paths(folder, stem)) + (net,)
