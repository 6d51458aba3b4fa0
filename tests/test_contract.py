"""The contract rules every node goes through (scripts/batch.py): value range, the alpha rule, no silent
data loss, grey handling, batch mapping; the report formatter (scripts/report.py); the memory-safe
TorchJob for any torch work (scripts/inference/runner.py)."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from restorekit.scripts.batch import NonFiniteError, fit_alpha, map_images, read_images, to_image
from restorekit.scripts.inference import memory_utils as mu
from restorekit.scripts.inference.runner import TorchJob
from restorekit.scripts.report import info_text, shown


def _rgba(alpha_lo=0.0, alpha_hi=1.0, b=2, h=12, w=10):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(b, h, w, 3, generator=g)
    alpha = alpha_lo + (alpha_hi - alpha_lo) * torch.rand(b, h, w, 1, generator=g)
    return torch.cat([rgb, alpha], -1)


# --- value range -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [255.0, 65535.0])
def test_integer_ranges_are_read_as_8_and_16_bit(scale):
    x = torch.rand(1, 6, 7, 3)
    y, rep = read_images(x * scale)
    assert rep.scale == scale and not rep.clipped and "bit data" in rep.notes[0]
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    y, rep = read_images(x * scale, values="as_is")
    assert rep.scale is None and float(y.max()) > 1


def test_values_outside_unit_range_are_clipped_and_reported():
    x = torch.rand(1, 6, 7, 3) - 0.2
    y, rep = read_images(x)
    assert rep.clipped and rep.scale is None and float(y.min()) == 0.0
    assert read_images(torch.rand(1, 4, 4, 3))[1].notes == []


# --- the alpha rule ------------------------------------------------------------------------------------------
def test_alpha_passes_through_untouched_when_in_range():
    x = _rgba()
    out, rep = map_images(x, lambda img: 1.0 - img, what="t")
    assert torch.equal(out[..., 3], x[..., 3]) and rep.input.alpha == "kept"
    torch.testing.assert_close(out[..., :3], 1.0 - x[..., :3])


def test_alpha_is_clipped_to_unit_range():
    x = _rgba(-0.5, 1.5)
    out, _ = map_images(x, lambda img: img, what="t", values="as_is")
    assert torch.equal(out[..., 3], x[..., 3].clamp(0, 1))


def test_alpha_is_resized_with_the_image():
    x = _rgba(0.0, 1.0, b=1, h=8, w=6)
    out, _ = map_images(x, lambda img: np.repeat(np.repeat(img, 2, 0), 2, 1), what="t")
    assert out.shape == (1, 16, 12, 4)
    torch.testing.assert_close(out[..., 3:], fit_alpha(x[..., 3:], 16, 12))
    assert 0.0 <= float(out[..., 3].min()) and float(out[..., 3].max()) <= 1.0


def test_alpha_goes_only_to_the_outputs_named():
    x = _rgba(b=1)
    (a, b), _ = map_images(x, lambda t: (t, t * 0.5), what="t", per_image=False, alpha_to=(0,))
    assert a.shape[-1] == 4 and b.shape[-1] == 3


def test_a_batch_of_one_alpha_serves_every_image():
    alpha = torch.rand(1, 5, 5, 1)
    assert fit_alpha(alpha, 5, 5, batch=3).shape == (3, 5, 5, 1)


# --- no silent data loss -------------------------------------------------------------------------------------
def test_nan_made_inside_is_an_error_naming_node_and_stage():
    def broken(img):
        out = img.copy()
        out[0, 0, 0] = np.nan
        return out

    with pytest.raises(NonFiniteError, match=r"Some Node: the broken step produced 1 NaN"):
        map_images(torch.rand(1, 4, 4, 3), broken, what="Some Node")
    with pytest.raises(NonFiniteError, match="Other: the filter step"):
        to_image(np.array([[np.inf]]), "Other", "filter")


def test_nan_inside_a_node_is_reported_not_hidden(monkeypatch):
    from restorekit.nodes.sharpen import RestoreKitSmartSharpen
    from restorekit.scripts import sharpen

    monkeypatch.setattr(sharpen, "sharpen", lambda img, **kw: (np.full_like(img, np.nan), None))
    with pytest.raises(NonFiniteError, match="Smart Sharpen"):
        RestoreKitSmartSharpen().sharpen(torch.rand(1, 8, 8, 3))


def test_results_are_clipped_float32_cpu():
    out, _ = map_images(torch.rand(1, 4, 4, 3), lambda img: img * 3.0 - 1.0, what="t")
    assert out.dtype == torch.float32 and float(out.min()) == 0.0 and float(out.max()) == 1.0


# --- grey, batches, devices ---------------------------------------------------------------------------------
def test_grey_policies():
    grey = torch.rand(2, 5, 6, 1)
    seen = []
    out, _ = map_images(grey, lambda img: seen.append(img.shape) or img, what="t", grey="keep")
    assert out.shape == grey.shape and seen == [(5, 6, 1)] * 2
    out, _ = map_images(grey, lambda img: img, what="t", grey="rgb")
    assert out.shape == (2, 5, 6, 3)
    out, _ = map_images(grey, lambda img: img * np.array([1.0, 0.5, 0.0], np.float32), what="t", grey="rgb_and_back")
    torch.testing.assert_close(out, grey * 0.5)


def test_per_image_reports_and_index():
    x = torch.rand(3, 4, 4, 3)
    out, rep = map_images(x, lambda img, i: (img, i), what="t", pass_index=True)
    assert rep.items == [0, 1, 2] and rep.input.images == 3 and torch.equal(out, x)


def test_whole_batch_runs_in_a_torch_job():
    x = torch.rand(2, 4, 4, 3)
    out, rep = map_images(x, lambda t, device: (t.to(device) * 0.5, "done"), what="t", per_image=False,
                          device="cpu")
    assert rep.item == "done" and rep.device == "cpu (requested)" and torch.equal(out, x * 0.5)


def test_torch_job_moves_to_cpu_after_out_of_memory():
    calls = []

    def work(x, device):
        calls.append(device.type)
        if device.type != "cpu":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x + 1

    with TorchJob("cpu", label="Test") as job:
        job.device = torch.device("meta")  # stands in for a GPU
        assert job.run(work, torch.zeros(2)).tolist() == [1.0, 1.0]
    assert calls == ["meta", "cpu"] and job.device.type == "cpu"
    assert job.report.steps == ["out of memory (RuntimeError) on meta: moving to cpu"]


def test_torch_job_out_of_memory_on_cpu_is_a_clear_error():
    def work(x, device):
        raise MemoryError()

    with pytest.raises(mu.OutOfMemoryError, match="Test ran out of memory on the cpu"):
        with TorchJob("cpu", label="Test") as job:
            job.run(work, 0)


def test_torch_job_other_errors_pass_through():
    with pytest.raises(ValueError, match="bad"):
        with TorchJob("cpu") as job:
            job.run(lambda x, device: (_ for _ in ()).throw(ValueError("bad")), 0)


# --- the report formatter ------------------------------------------------------------------------------------
@dataclass
class _Rep:
    name: str = shown("name")
    value: float = shown("value", fmt=lambda v: round(v, 2))
    secret: int = shown(hidden=True, default=0)
    missing: str = shown("missing", default=None)


def test_info_text_layout_and_batches():
    text = info_text("Title", _Rep("a", 1.234), {"extra": [1, 2]})
    assert text.splitlines() == ["Title", "name: a", "value: 1.23", "extra: [1, 2]"]
    same = info_text("T", [_Rep("a", 1.0), _Rep("a", 1.0)])
    assert same.splitlines() == ["T", "name: a", "value: 1"]
    differ = info_text("T", [_Rep("a", 1.0), _Rep("b", 2.0)])
    assert "name: a | b" in differ.splitlines()
