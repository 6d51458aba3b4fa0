"""Tiled inference: blend weights form a partition of unity; tiled output equals untiled output."""
import pytest
import torch

from _nets import ConvNet
from restorekit.scripts.inference.handle import ModelHandle
from restorekit.scripts.inference.runner import run_model
from restorekit.scripts.inference.tiling import axis_weights, pad_to_multiple, tile_starts, tiled_inference


@pytest.mark.parametrize("length,tile,overlap,scale", [
    (1000, 256, 32, 1), (993, 512, 32, 4), (100, 64, 31, 1), (300, 64, 40, 2), (257, 256, 32, 2), (100, 256, 32, 1), (3001, 512, 64, 3), (130, 64, 16, 1),
])
def test_weights_sum_to_one_and_cover(length, tile, overlap, scale):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= min(overlap, tile)  # neighbours overlap at least `overlap`
    # (100, 64, 31): starts 0, 18, 36 — three tiles share pixels 36..63
    total = torch.zeros(length * scale)
    for s, w in zip(starts, axis_weights(starts, tile, length, scale)):
        assert w.min() >= 0 and w.max() <= 1
        total[s * scale:s * scale + len(w)] += w
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("shape", [(1, 150, 203), (2, 97, 131)])
def test_tiled_equals_untiled_within_receptive_field(scale, shape):
    # receptive radius 2 (two 3x3 convs) fits inside overlap/4 = 4 for overlap 16
    net = ConvNet(scale=scale).eval()
    image = torch.rand(*shape, 3, generator=torch.Generator().manual_seed(1))
    whole = tiled_inference(net, image, scale=scale, out_channels=3, tile=None, clamp=False)
    tiled = tiled_inference(net, image, scale=scale, out_channels=3, tile=48, overlap=16, clamp=False)
    assert tiled.shape == (shape[0], shape[1] * scale, shape[2] * scale, 3)
    assert (whole - tiled).abs().max().item() < 1e-5


def test_runner_tiled_equals_untiled_and_reports_tiles():
    handle = ModelHandle(ConvNet(scale=2), "convnet", scale=2, min_overlap=16)
    image = torch.rand(1, 141, 117, 3, generator=torch.Generator().manual_seed(2))
    whole, r1 = run_model(handle, image, tile=0, progress=False)
    tiled, r2 = run_model(handle, image, tile=64, overlap=16, progress=False)
    assert r1.tile is None and r2.tile == 64 and r2.tiles > 1
    assert (whole - tiled).abs().max().item() < 1e-5


def test_rgba_grey_and_batch_through_runner():
    handle = ModelHandle(ConvNet(scale=2), "convnet", scale=2)
    rgba = torch.rand(2, 40, 52, 4)
    out, _ = run_model(handle, rgba, progress=False)
    assert out.shape == (2, 80, 104, 4)
    # alpha bypasses the network: bicubic-resized, so a constant alpha stays constant
    const = rgba.clone()
    const[..., 3] = 0.25
    out_c, _ = run_model(handle, const, progress=False)
    assert torch.allclose(out_c[..., 3], torch.full_like(out_c[..., 3], 0.25), atol=1e-5)
    grey = torch.rand(1, 33, 35, 1)
    out_g, _ = run_model(handle, grey, progress=False)
    assert out_g.shape == (1, 66, 70, 1)
    expected = handle.module(grey.permute(0, 3, 1, 2).expand(-1, 3, -1, -1)).mean(1)
    assert torch.allclose(out_g[..., 0], expected[0].detach(), atol=1e-5)


def test_size_multiple_padding_crops_back():
    class NeedsMultipleOf8(torch.nn.Module):
        def forward(self, x):
            assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0, x.shape
            return x * 0.5

    handle = ModelHandle(NeedsMultipleOf8(), "m8", size_multiple=8, pad_mode="replicate")
    image = torch.rand(1, 37, 29, 3)
    out, rep = run_model(handle, image, progress=False)
    assert out.shape == image.shape
    assert torch.allclose(out, image * 0.5, atol=1e-6)
    big = torch.rand(1, 137, 149, 3)
    out_t, rep_t = run_model(handle, big, tile=16, progress=False)  # raised to the 64 px tile floor
    assert rep_t.tile == 64 and rep_t.tiles > 1 and torch.allclose(out_t, big * 0.5, atol=1e-6)


def test_pad_to_multiple_modes():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y, ph, pw = pad_to_multiple(x, 4, mode="reflect")
    assert y.shape[-2:] == (4, 4) and (ph, pw) == (1, 0)
    assert torch.equal(y[0, 0, 3], x[0, 0, 1])  # reflect repeats the row before the edge
    z, _, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 8, mode="reflect")  # falls back to replicate
    assert z.shape[-2:] == (8, 8) and torch.all(z == 1)


def test_identity_network_never_modifies_the_input():
    image = torch.rand(1, 20, 24, 3) * 1.4 - 0.2  # values outside 0..1 that clamping would change
    before = image.clone()
    out = tiled_inference(torch.nn.Identity(), image, scale=1, out_channels=3, tile=None)
    assert torch.equal(image, before)
    assert out.min() >= 0 and out.max() <= 1


def test_whole_image_result_is_the_network_output_not_a_copy():
    """One image, no tiles: the runner hands back the network's own (channels-last) output, so the
    peak memory is that of the bare call (issue 5's RSS goal) and values are clamped in place."""
    seen = {}

    def forward(x):
        y = (x * 3.0 - 1.0).contiguous(memory_format=torch.channels_last)
        seen["ptr"] = y.untyped_storage().data_ptr()
        return y

    img = torch.rand(1, 37, 53, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as ComfyUI runs every node
        out = tiled_inference(forward, img, scale=1, out_channels=3, tile=None)
    assert out.untyped_storage().data_ptr() == seen["ptr"]
    assert out.shape == (1, 37, 53, 3) and out.is_contiguous()
    torch.testing.assert_close(out, (img * 3.0 - 1.0).clamp(0, 1))
    # outside inference mode the caller gets an ordinary tensor it may update in place
    plain = tiled_inference(forward, img, scale=1, out_channels=3, tile=None)
    assert not plain.is_inference()
    plain.mul_(1.0)
    torch.testing.assert_close(plain, out)
    # an NCHW output is copied once into a contiguous IMAGE with the same values
    out2 = tiled_inference(lambda x: (x * 3.0 - 1.0).contiguous(), img, scale=1, out_channels=3, tile=None)
    assert out2.is_contiguous()
    torch.testing.assert_close(out2, out)


def test_runner_whole_image_with_identity_network_returns_a_new_tensor():
    img = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(1)) * 1.5
    before = img.clone()
    h = ModelHandle(module=torch.nn.Identity(), arch="identity")
    out, rep = run_model(h, img, device="cpu", progress=False)
    assert rep.tile is None
    assert out.untyped_storage().data_ptr() != img.untyped_storage().data_ptr()
    torch.testing.assert_close(img, before)
    torch.testing.assert_close(out, before.clamp(0, 1))
