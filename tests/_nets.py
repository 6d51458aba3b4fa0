"""Small networks and checkpoint files for the foundation tests."""
import importlib
import os

import torch


class ConvNet(torch.nn.Module):
    """Two 3x3 convolutions (receptive radius 2) and an optional pixel-shuffle upscale."""

    def __init__(self, scale=1, cin=3, cout=3, width=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.c1 = torch.nn.Conv2d(cin, width, 3, padding=1)
        self.c2 = torch.nn.Conv2d(width, cout * scale * scale, 3, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        self.shuffle = torch.nn.PixelShuffle(scale) if scale > 1 else torch.nn.Identity()

    def forward(self, x):
        return torch.sigmoid(self.shuffle(self.c2(torch.relu(self.c1(x)))))


class FailAbove(torch.nn.Module):
    """Raises a real out-of-memory exception when a tile has more than ``limit``² pixels."""

    def __init__(self, net, limit, exc="cpu"):
        super().__init__()
        self.net, self.limit, self.exc, self.calls = net, limit, exc, []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        if x.shape[-1] * x.shape[-2] > self.limit * self.limit:
            if self.exc == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if self.exc == "memory":
                raise MemoryError()
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)"
            )
        return self.net(x)


def rrdbnet(num_filters=16, num_blocks=1, scale=4, seed=0):
    """spandrel's ESRGAN network with random weights (a stand-in for a real ESRGAN file)."""
    RRDBNet = importlib.import_module("spandrel.architectures.ESRGAN.__arch.RRDB").RRDBNet
    torch.manual_seed(seed)
    return RRDBNet(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)


def write_esrgan(path, **kw):
    """Write a random-weight ESRGAN checkpoint in Real-ESRGAN's {'params_ema': sd} layout."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"params_ema": rrdbnet(**kw).state_dict()}, path)
    return path


def rrdbnet_official(nf=8, nb=1, gc=32, seed=0, centre_output=True):
    """basicsr RRDBNet (RealESRGAN_x4plus layout) state dict with variance-preserving random weights;
    ``centre_output`` lifts the last bias by 0.5 so the output sits in 0..1 (clamping hides less)."""
    g = torch.Generator().manual_seed(seed)

    def conv(co, ci):
        return torch.randn(co, ci, 3, 3, generator=g) / (9 * ci) ** 0.5, 0.01 * torch.randn(co, generator=g)

    sd = {}

    def put(name, co, ci):
        sd[name + ".weight"], sd[name + ".bias"] = conv(co, ci)

    put("conv_first", nf, 3)
    for b in range(nb):
        for r in (1, 2, 3):
            for i in range(1, 6):
                put(f"body.{b}.rdb{r}.conv{i}", nf if i == 5 else gc, nf + (i - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        put(name, nf, nf)
    put("conv_last", 3, nf)
    if centre_output:
        sd["conv_last.bias"] += 0.5
    return sd
