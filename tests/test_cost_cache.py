"""Measured costs persist across processes (scripts/inference/cost_cache.py): a second handle of the
same weights -- a fresh process -- starts from the first one's measurements without measuring; other
weights, another environment, a corrupt or foreign file are never used; writes are atomic."""
import json
import os

import pytest
import torch

from _nets import ConvNet
from restorekit.scripts.inference import cost_cache, fastpath
from restorekit.scripts.inference.handle import ModelHandle
from restorekit.scripts.inference.runner import run_model
from restorekit.scripts.inference.runtime import PlainRuntime


def _handle(seed=0, width=16):
    return ModelHandle(ConvNet(width=width, seed=seed), "net", supports_bfloat16=True)


def _image(h=96, w=112, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, 3, generator=g)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_COST_CACHE_DIR", str(tmp_path))
    return tmp_path


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_fresh_handle_reuses_the_measurements(cache):
    first = _handle()
    out1, rep1 = run_model(first, _image(), device="cpu", progress=False, measure=True)
    assert rep1.probe_seconds > 0 and "saved to the cache" in rep1.cache, rep1.cache
    (path,) = _files(cache)
    doc = json.loads(path.read_text())
    assert doc["model"] == cost_cache.model_hash(first) and doc["entries"]

    second = _handle()  # same weights, new handle: what a restarted process has
    assert second.costs == {}
    out2, rep2 = run_model(second, _image(), device="cpu", progress=False, measure=True)
    assert "from the cache" in rep2.cache, rep2.cache
    assert rep2.probe_seconds < 1e-3  # nothing measured again (the same probes took rep1.probe_seconds)
    assert (rep2.precision, rep2.layout) == (rep1.precision, rep1.layout)
    sel1 = fastpath.cached(first, "cpu", "auto")
    sel2 = fastpath.cached(second, "cpu", "auto")
    assert sel2.variant == sel1.variant and sel2.seconds == pytest.approx(sel1.seconds)
    # the first run's own timing joins the table it saves, so the plan may move after it (whole image vs
    # tiles: a 3e-7 difference); from the same table both handles plan alike and give the same output
    out1b, rep1b = run_model(first, _image(), device="cpu", progress=False, measure=True)
    assert rep2.plan == rep1b.plan and torch.equal(out1b, out2)
    assert torch.allclose(out1, out2, atol=1e-5)
    assert [p.name for p in _files(cache)] == [path.name]  # no temporary files left


def test_other_weights_or_environment_do_not_share(cache, monkeypatch):
    a, b = _handle(seed=0), _handle(seed=1)
    assert cost_cache.model_hash(a) != cost_cache.model_hash(b)
    assert cost_cache.model_hash(a) == cost_cache.model_hash(_handle(seed=0))
    run_model(a, _image(), device="cpu", progress=False, measure=True)
    _o, rep = run_model(b, _image(), device="cpu", progress=False, measure=False)
    assert "from the cache" not in rep.cache
    monkeypatch.setattr(cost_cache, "environment_key", lambda device: "another machine")
    c = _handle(seed=0)
    _o, rep = run_model(c, _image(), device="cpu", progress=False, measure=False)
    assert "from the cache" not in rep.cache and fastpath.cached(c, "cpu", "auto") is None
    # both environments are kept in the file
    doc = json.loads(cache.joinpath("costs-v1", cost_cache.model_hash(a) + ".json").read_text())
    assert len(doc["entries"]) == 2 and "another machine" in doc["entries"]  # c's run timed its call
    assert next(v for k, v in doc["entries"].items() if k != "another machine")["selections"]  # a's, kept


@pytest.mark.parametrize("content", [b"{not json", json.dumps({"format": "other"}).encode(),
                                     b"\xff\xfe\x00garbage"])
def test_a_corrupt_or_foreign_file_is_ignored_and_replaced(cache, content):
    h = _handle()
    path = cache / "costs-v1" / (cost_cache.model_hash(h) + ".json")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    out, rep = run_model(h, _image(), device="cpu", progress=False, measure=True)
    assert "ignored" in rep.cache and "saved to the cache" in rep.cache, rep.cache
    assert json.loads(path.read_text())["model"] == cost_cache.model_hash(h)


def test_another_models_file_is_ignored(cache):
    a, b = _handle(seed=0), _handle(seed=1)
    run_model(a, _image(), device="cpu", progress=False, measure=True)
    src = cache / "costs-v1" / (cost_cache.model_hash(a) + ".json")
    dst = src.with_name(cost_cache.model_hash(b) + ".json")
    dst.write_text(src.read_text())  # a's measurements under b's name
    _o, rep = run_model(b, _image(), device="cpu", progress=False, measure=False)
    assert "another format or model" in rep.cache and fastpath.cached(b, "cpu", "auto") is None


def test_cache_folder_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_COST_CACHE_DIR", "off")
    monkeypatch.setenv("RESTOREKIT_CACHE_DIR", str(tmp_path / "pack"))
    assert PlainRuntime().cache_dir() is None
    _o, rep = run_model(_handle(), _image(40, 40), device="cpu", progress=False, measure=False)
    assert rep.cache == "cost cache off"
    monkeypatch.delenv("RESTOREKIT_COST_CACHE_DIR")
    assert PlainRuntime().cache_dir() == str(tmp_path / "pack")  # the pack's cache folder
    monkeypatch.delenv("RESTOREKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    assert PlainRuntime().cache_dir() == os.path.join(str(tmp_path), "restorekit")


def test_comfyui_user_directory(tmp_path, monkeypatch):
    """Inside ComfyUI the cache lives in ComfyUI's user directory (folder_paths)."""
    from restorekit.nodes.comfy_adapter import ComfyRuntime

    class FakeFolderPaths:
        @staticmethod
        def get_user_directory():
            return str(tmp_path / "user")

    rt = ComfyRuntime()
    rt.folder_paths = FakeFolderPaths()
    monkeypatch.delenv("RESTOREKIT_COST_CACHE_DIR")
    monkeypatch.delenv("RESTOREKIT_CACHE_DIR", raising=False)
    assert rt.cache_dir() == os.path.join(str(tmp_path / "user"), "restorekit", "cache")
    monkeypatch.setenv("RESTOREKIT_COST_CACHE_DIR", str(tmp_path / "mine"))
    assert rt.cache_dir() == str(tmp_path / "mine")
