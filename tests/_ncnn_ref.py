"""The ncnn runtime (PyPI ``ncnn``) as an independent reference: run a .param/.bin on the CPU."""
import numpy as np


def have_ncnn() -> bool:
    try:
        import ncnn  # noqa: F401
    except Exception:
        return False
    return True


def run_ncnn(param: str, bin_path: str, chw: np.ndarray, threads: int = 1) -> np.ndarray:
    """Output of the graph for one ``[C, H, W]`` float32 input (input blob of the first Input layer,
    output blob of the last layer).  The numpy array and the ncnn.Mat stay referenced until extract
    returns: a temporary Mat gives garbage."""
    import ncnn

    from restorekit.scripts.inference.ncnn_format import read_param

    g = read_param(param)
    in_blob = g.input_layers()[0].outputs[0]
    out_blob = g.output_blob()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(param) != 0 or net.load_model(bin_path) != 0:
        raise RuntimeError(f"ncnn could not load {param}")
    x = np.ascontiguousarray(chw, dtype=np.float32)
    mat = ncnn.Mat(x)
    ex = net.create_extractor()
    ex.input(in_blob, mat)
    ret, out = ex.extract(out_blob)
    if ret != 0:
        raise RuntimeError(f"ncnn extract failed ({ret})")
    y = np.array(out, dtype=np.float32, copy=True)
    del ex, mat, x, net
    return y


def run_family(imp, chw: np.ndarray, threads: int = 1) -> np.ndarray:
    """The ncnn runtime's answer for what our imported network computes on ``chw``: the graph plus the
    pre/post-processing its C++ front end does around it (waifu2x: 7 px edge padding; Real-CUGAN:
    reflection padding, the pro models' 0.7x + 0.15 input range, x4's nearest-neighbour residual)."""
    import torch
    import torch.nn.functional as F

    from restorekit.scripts.inference.ncnn_families import REALCUGAN_PREPAD

    det = imp.detected
    if det.family == "waifu2x-upconv7":
        return run_ncnn(imp.param_path, imp.bin_path, np.pad(chw, ((0, 0), (7, 7), (7, 7)), mode="edge"), threads)
    if det.family != "RealCUGAN":
        return run_ncnn(imp.param_path, imp.bin_path, chw, threads)
    pro, s = det.config["pro"], det.scale
    x = chw * 0.7 + 0.15 if pro else chw
    n = REALCUGAN_PREPAD[s]
    y = run_ncnn(imp.param_path, imp.bin_path, np.pad(x, ((0, 0), (n, n), (n, n)), mode="reflect"), threads)
    if s == 4:
        y = y + F.interpolate(torch.from_numpy(np.ascontiguousarray(x))[None], scale_factor=4, mode="nearest")[0].numpy()
    return (y - 0.15) / 0.7 if pro else y
