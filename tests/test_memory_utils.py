"""memory_utils (measuring), planning, and the runner: OOM classification, the fallback chain, tile
planning, the memory monitor."""
import numpy as np
import pytest
import torch

from _nets import ConvNet, FailAbove
from restorekit.nodes.restore_model import RestoreKitRestoreWithModel
from restorekit.scripts.inference import memory_utils as mu
from restorekit.scripts.inference import planning
from restorekit.scripts.inference.handle import ModelHandle
from restorekit.scripts.inference.runner import run_model


def test_is_oom_error_classifies_real_exception_types():
    assert mu.is_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    assert mu.is_oom_error(MemoryError())
    assert mu.is_oom_error(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not mu.is_oom_error(RuntimeError("size mismatch for conv.weight"))
    assert not mu.is_oom_error(ValueError("out of memory"))  # only RuntimeError messages are sniffed


def test_real_cpu_allocator_failure_is_classified():
    # a genuinely impossible allocation raises the CPU allocator's own error type and message
    with pytest.raises(BaseException) as info:
        torch.empty(1 << 50, dtype=torch.uint8)
    assert mu.is_oom_error(info.value)


@pytest.mark.parametrize("exc", ["cpu", "cuda", "memory"])
def test_fallback_chain_shrinks_tile_until_it_fits(exc):
    net = ConvNet(scale=2)
    failing = FailAbove(net, limit=70, exc=exc)
    handle = ModelHandle(failing, "flaky", scale=2, min_overlap=8)
    image = torch.rand(1, 150, 180, 3, generator=torch.Generator().manual_seed(0))
    out, report = run_model(handle, image, tile=0, overlap=8, progress=False, min_tile=16)
    # the first plan (the whole image, or a tile within 5 % of its pixels) failed, then tiles were
    # halved until every tile fitted
    assert report.tile is not None and report.tile < max(image.shape[1:3])
    assert len(report.steps) >= 1 and all("out of memory" in s for s in report.steps)
    assert "retry with tile" in report.steps[0]
    n_ok = report.tiles
    assert all(h * w <= 70 * 70 for h, w in failing.calls[-n_ok:])
    reference = net(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    assert (out[inner] - reference[inner].detach()).abs().max() < 1e-5


def test_fallback_chain_gives_clear_error_when_nothing_fits():
    handle = ModelHandle(FailAbove(ConvNet(), limit=8), "hopeless")
    with pytest.raises(mu.OutOfMemoryError) as info:
        run_model(handle, torch.rand(1, 100, 100, 3), progress=False, min_tile=32)
    msg = str(info.value)
    assert "ran out of memory even at the smallest tile" in msg and "Steps:" in msg
    assert info.value.steps[-1].startswith("out of memory") and "no smaller tile" in info.value.steps[-1]


def test_node_info_lists_fallback_steps():
    handle = ModelHandle(FailAbove(ConvNet(), limit=60), "flaky")
    node = RestoreKitRestoreWithModel()
    image = torch.rand(1, 90, 100, 3)
    out, info = node.restore(handle, image, "cpu", 0, 16, "auto")
    assert out.shape == (1, 90, 100, 3)
    _, report = run_model(handle, image, device="cpu", overlap=16)  # the node's library call
    assert report.steps and all(s.startswith("out of memory (RuntimeError)") for s in report.steps)
    assert all(step in info for step in report.steps)  # info shows every step the runner took


def test_non_oom_errors_propagate_unchanged():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_model(ModelHandle(Broken(), "broken"), torch.rand(1, 32, 32, 3), progress=False)


def test_plan_whole_image_when_it_fits_and_tiles_when_not():
    handle = ModelHandle(ConvNet(), "convnet", size_multiple=8, min_overlap=16)
    # untimed: the whole image when every tiling computes > 5 % more pixels (200 px: +8 % at least)
    plan = planning.plan_tiles(handle, 200, 160, "cpu", free_bytes=10 << 30, bytes_per_pixel=1000)
    assert plan.tile is None
    # ... else the least memory within 5 % of the fewest pixels (two 264x400 tiles: +4 %, half the memory)
    plan = planning.plan_tiles(handle, 500, 400, "cpu", free_bytes=10 << 30, bytes_per_pixel=1000)
    opt = {o.tile: o for o in plan.options}
    assert plan.tile is not None and opt[plan.tile].computed_px <= 1.05 * opt[None].computed_px
    assert opt[plan.tile].bytes < 0.6 * opt[None].bytes and "untimed" in plan.reason
    plan = planning.plan_tiles(handle, 4000, 3000, "cpu", free_bytes=200 << 20, bytes_per_pixel=1000)
    assert plan.tile is not None and plan.tile % 8 == 0
    assert plan.tile * plan.tile * 1000 <= plan.budget_bytes
    assert 16 <= plan.overlap <= plan.tile // 4
    with pytest.raises(mu.OutOfMemoryError, match="not enough free memory"):
        planning.plan_tiles(handle, 4000, 3000, "cpu", free_bytes=100 << 20, reserved_bytes=1 << 30, bytes_per_pixel=1000)


def test_an_architecture_that_discourages_tiling_runs_whole_when_it_fits():
    """Per-image statistics (the hybrid U-Net, SFHformer): the whole image whenever it fits — above
    the size where other architectures are always tiled, and even where tiles would be leaner — else
    the largest tile that fits."""
    handle = ModelHandle(ConvNet(), "global", size_multiple=8, min_overlap=16, tiling="discouraged")
    plain = ModelHandle(ConvNet(), "convnet", size_multiple=8, min_overlap=16)
    for h, w in ((500, 400), (1200, 900)):
        assert planning.plan_tiles(plain, h, w, "cpu", free_bytes=10 << 30, bytes_per_pixel=1000).tile is not None
        plan = planning.plan_tiles(handle, h, w, "cpu", free_bytes=10 << 30, bytes_per_pixel=1000)
        assert plan.tile is None and "discourages tiling" in plan.reason
    plan = planning.plan_tiles(handle, 4000, 3000, "cpu", free_bytes=400 << 20, bytes_per_pixel=1000)
    fits = [o for o in plan.options if o.bytes <= plan.budget_bytes]
    assert plan.tile == max(o.tile for o in fits if o.tile) and "fewest seams" in plan.reason
    # the pure rule: nothing fits -> None
    opts = [planning.PlanOption(None, 1, 100, 100, bytes=10.0), planning.PlanOption(64, 4, 120, 30, bytes=5.0)]
    assert planning.choose_fewest_seams(opts, 4.0)[0] is None
    assert planning.choose_fewest_seams(opts, 6.0)[0].tile == 64 and planning.choose_fewest_seams(opts, 10.0)[0].tile is None


def test_the_hybrid_unet_is_run_on_the_whole_image():
    from restorekit.hybrid import unet

    h = unet.handle_from_module(unet.RestoreUNet(base=4))
    assert h.tiling == "discouraged"
    img = np.random.default_rng(0).uniform(0, 1, (300, 260, 3)).astype(np.float32)
    _, report = unet.run(h, img, device="cpu")
    assert report.info_fields()["tile"] == "whole image"


def test_probe_grows_with_network_width():
    small = planning.probe_bytes_per_pixel(ModelHandle(ConvNet(width=4), "s"), "cpu")
    large = planning.probe_bytes_per_pixel(ModelHandle(ConvNet(width=64), "l"), "cpu")
    # a 64-channel feature map alone is 256 bytes per pixel
    assert large > small and large >= 256


def test_probe_measurement_lives_on_its_handle():
    """A model's measurement is kept on its own handle: a new model (even one reusing a freed
    address) starts without it, and the measurement scales with the network's width."""
    small, wide = ModelHandle(ConvNet(width=4), "s"), ModelHandle(ConvNet(width=32), "w")
    bpp_small = planning.probe_bytes_per_pixel(small, "cpu")
    assert small.costs and not wide.costs
    bpp_wide = planning.probe_bytes_per_pixel(wide, "cpu")
    assert bpp_wide > 2 * bpp_small
    assert planning.probe_bytes_per_pixel(small, "cpu") == bpp_small  # cached, not remeasured


def test_memory_monitor_sees_an_allocation():
    with mu.MemoryMonitor(interval_s=0.001) as mon:
        block = np.ones(200 << 20, dtype=np.uint8)  # 200 MiB, touched
        block[::4096] = 2
        del block
    assert mon.ram_delta_bytes >= 150 << 20


def test_output_larger_than_ram_is_refused(monkeypatch):
    monkeypatch.setattr(mu, "free_memory", lambda device: 64 << 20)
    handle = ModelHandle(ConvNet(scale=4), "x4", scale=4)
    with pytest.raises(mu.OutOfMemoryError, match="needs .* of RAM"):
        run_model(handle, torch.rand(1, 1024, 1024, 3), progress=False)


def test_resolve_device():
    assert mu.resolve_device("cpu")[0].type == "cpu"
    dev, note = mu.resolve_device("gpu")
    if not mu.gpu_available():
        assert dev.type == "cpu" and "none available" in note
    with pytest.raises(ValueError):
        mu.resolve_device("quantum")


def test_precision_falls_back_where_unsupported():
    from restorekit.scripts.inference.fastpath import candidates

    handle = ModelHandle(ConvNet(), "n", supports_half=False)
    cands, notes = candidates(handle, torch.device("cpu"), "fp16")
    assert {v.dtype for v in cands} == {torch.float32} and "not supported" in notes[0]
    handle.supports_bfloat16 = True
    cands, notes = candidates(handle, torch.device("cpu"), "bf16")
    assert {v.dtype for v in cands} == {torch.bfloat16}
    out, report = run_model(handle, torch.rand(1, 20, 20, 3), precision="bf16", progress=False)
    assert report.precision == "bf16" and out.dtype == torch.float32


def test_configure_tensorflow_without_tensorflow():
    import importlib.util

    from restorekit.hybrid.keras_unet import configure_tensorflow

    tf, device, note = configure_tensorflow("auto")
    if importlib.util.find_spec("tensorflow") is None:
        assert tf is None and device == "cpu" and "not installed" in note
    else:
        assert device in ("/CPU:0", "/GPU:0")
