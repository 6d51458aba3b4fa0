"""The ComfyUI adapter routes to ComfyUI's services when present and falls back when not."""
import sys
import types

import pytest
import torch

from restorekit.nodes import comfy_adapter
from restorekit.scripts.inference import runtime as rt


@pytest.fixture
def fake_comfy(monkeypatch, tmp_path):
    calls = {"progress": [], "free": [], "empty": 0}

    class Interrupted(Exception):
        pass

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.get_free_memory = lambda dev=None: calls["free"].append(dev) or 123456789
    mm.soft_empty_cache = lambda: calls.__setitem__("empty", calls["empty"] + 1)
    mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError
    mm.interrupt = False

    def throw():
        if mm.interrupt:
            raise Interrupted("interrupted by the user")

    mm.throw_exception_if_processing_interrupted = throw
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update(self, n):
            calls["progress"].append((n, self.total))

    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.supported_pt_extensions = {".pth", ".safetensors"}
    fp.folder_names_and_paths = {"upscale_models": ([str(tmp_path / "models" / "upscale_models")], {".pth"})}

    def add_model_folder_path(name, path, is_default=False):
        fp.folder_names_and_paths[name][0].append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_filename_list = lambda name: ["a.pth"]
    for name, mod in {"comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils, "folder_paths": fp}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    saved = rt.get_runtime()
    yield calls, mm, fp, Interrupted
    rt.set_runtime(saved)


def test_adapter_uses_comfy_services(fake_comfy):
    calls, mm, fp, Interrupted = fake_comfy
    rt.set_runtime(rt.PlainRuntime())
    runtime = comfy_adapter.install()
    assert runtime.name == "comfyui"
    assert runtime.free_memory(torch.device("cpu")) == 123456789
    bar = runtime.progress(4)
    bar.update(1)
    assert calls["progress"] == [(1, 4)]
    runtime.empty_cache()
    assert calls["empty"] == 1
    mm.interrupt = True
    with pytest.raises(Interrupted):
        runtime.check_interrupt()
    # the pack's own folder kind was registered with its own extensions
    assert "restorekit" in fp.folder_names_and_paths
    assert fp.folder_names_and_paths["restorekit"][1] == {".pth", ".safetensors"}
    assert runtime.model_files("upscale_models") == ["a.pth"]


def test_user_configured_folder_is_merged_not_replaced(fake_comfy):
    calls, mm, fp, _ = fake_comfy
    fp.folder_names_and_paths["restorekit"] = (["/user/own/restorekit"], {".pth"})
    rt.set_runtime(rt.PlainRuntime())
    comfy_adapter.install()
    paths = fp.folder_names_and_paths["restorekit"][0]
    assert paths[0] == "/user/own/restorekit" and len(paths) == 2


def test_interrupt_between_tiles_stops_the_runner(fake_comfy):
    from _nets import ConvNet
    from restorekit.scripts.inference.handle import ModelHandle
    from restorekit.scripts.inference.runner import run_model

    calls, mm, fp, Interrupted = fake_comfy
    rt.set_runtime(rt.PlainRuntime())
    comfy_adapter.install()

    class InterruptAfterTwo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.n = ConvNet(), 0

        def forward(self, x):
            self.n += 1
            if self.n == 2:
                mm.interrupt = True
            return self.net(x)

    net = InterruptAfterTwo()
    with pytest.raises(Interrupted):
        run_model(ModelHandle(net, "n"), torch.rand(1, 200, 200, 3), tile=64)
    assert net.n == 2  # stopped at the next tile boundary
    assert calls["progress"] and calls["progress"][0][1] > 2


def test_plain_runtime_fallbacks(tmp_path, monkeypatch):
    plain = rt.PlainRuntime()
    assert plain.free_memory(torch.device("cpu")) > 0
    monkeypatch.setenv("RESTOREKIT_MODELS_DIR", str(tmp_path))
    (tmp_path / "upscale_models").mkdir()
    (tmp_path / "upscale_models" / "m.safetensors").write_bytes(b"x")
    # the user's folder, then the weights that ship inside the pack (models/realesrgan)
    assert plain.model_files("upscale_models") == ["m.safetensors", "realesr-animevideov3-x4.safetensors"]
    plain.request_interrupt()
    with pytest.raises(rt.InterruptedByUser):
        plain.check_interrupt()


def test_install_keeps_folders_registered_before_it():
    """A model folder registered with the plain runtime before the nodes load (the lazy package root
    imports them on first use) is still registered after the adapter replaces the runtime."""
    from restorekit.nodes import comfy_adapter
    from restorekit.scripts.inference import runtime as rt

    saved = rt.get_runtime()
    try:
        plain = rt.PlainRuntime()
        plain.register_model_folder("upscale_models", "/tmp/some_folder")
        rt.set_runtime(plain)
        installed = comfy_adapter.install()
        assert installed is not plain and "/tmp/some_folder" in installed.model_folders("upscale_models")
    finally:
        rt.set_runtime(saved)
