"""Bad input gets a clear error that names the problem: images, model files, model names."""
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from _nets import ConvNet, write_esrgan
from restorekit.scripts.batch import check_image
from restorekit.nodes.restore_model import RestoreKitLoadModel, RestoreKitRestoreWithModel
from restorekit.scripts.inference.files import ModelFileError, load_spandrel, load_state_dict
from restorekit.scripts.inference.handle import ModelHandle
from restorekit.scripts.inference.runner import run_model
from restorekit.scripts.inference.runtime import get_runtime


# --- images -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,match", [
    (torch.rand(16, 16), "rank 2"),
    (torch.rand(1, 1, 16, 16, 3), "rank 5"),
    (torch.rand(1, 3, 32, 32), "32 channels"),  # [B,C,H,W] handed over by mistake
    (torch.rand(1, 16, 16, 2), "2 channels"),
    (torch.rand(1, 0, 16, 3), "empty"),
    (torch.rand(0, 16, 16, 3), "empty"),
    ("not an image", "expected an IMAGE tensor"),
])
def test_check_image_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        check_image(bad)


def test_check_image_nan_inf():
    img = torch.rand(1, 8, 8, 3)
    img[0, 1, 1, 0] = float("nan")
    img[0, 2, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="2 pixel value"):
        check_image(img)


def test_check_image_huge_side():
    huge = torch.empty(1, 40000, 1, 3).expand(1, 40000, 1, 3)
    with pytest.raises(ValueError, match="larger than the supported"):
        check_image(huge)


def test_restore_node_rejects_nan_image():
    node = RestoreKitRestoreWithModel()
    img = torch.full((1, 16, 16, 3), float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        node.restore(ModelHandle(ConvNet(), "n"), img, "cpu", 0, 32, "auto")


# --- model files ---------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_random_bytes_refused(tmp_path):
    p = tmp_path / "noise.pth"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="noise.pth.*not a PyTorch"):
        load_state_dict(str(p))


def test_empty_and_missing_files_refused(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.safetensors.*empty"):
        load_state_dict(str(p))
    with pytest.raises(ModelFileError, match="does not exist"):
        load_state_dict(str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(str(marker))}, p,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ModelFileError, match="evil.pth.*pickled code"):
        load_state_dict(str(p))
    assert not marker.exists()


def test_plain_pickle_payload_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil2.pth"
    with open(p, "wb") as f:
        pickle.dump(_RunsCode(str(marker)), f, protocol=2)
    with pytest.raises(ModelFileError):
        load_state_dict(str(p))
    assert not marker.exists()


def test_truncated_checkpoint_refused(tmp_path):
    good = write_esrgan(str(tmp_path / "good.pth"))
    data = open(good, "rb").read()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pth.*truncated or corrupt"):
        load_state_dict(str(bad))
    from safetensors.torch import save_file

    st = tmp_path / "cut.safetensors"
    save_file({"w": torch.rand(64, 64)}, str(st))
    st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        load_state_dict(str(st))


def test_unknown_architecture_refused(tmp_path):
    p = tmp_path / "mystery.pth"
    torch.save({"encoder.weird.weight": torch.rand(3, 3)}, p)
    with pytest.raises(ModelFileError, match="mystery.pth.*not an architecture spandrel can load"):
        load_spandrel(str(p))
    q = tmp_path / "stats.pth"
    torch.save({"epoch": 3, "lr": 0.1}, q)
    with pytest.raises(ModelFileError, match="stats.pth.*no tensors"):
        load_spandrel(str(q))


def test_zip_that_is_not_torch_refused(tmp_path):
    p = tmp_path / "archive.pth"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="archive.pth"):
        load_state_dict(str(p))


# --- model names and folders -----------------------------------------------------------------------
@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "upscale_models"
    folder.mkdir()
    write_esrgan(str(folder / "tiny_esrgan.pth"))
    (tmp_path / "secret.pth").write_bytes(b"outside")
    runtime = get_runtime()
    monkeypatch.setattr(runtime, "model_folders", lambda kind: [str(folder)])
    return folder


def test_load_node_lists_and_loads_a_model(model_dir):
    node = RestoreKitLoadModel()
    assert RestoreKitLoadModel.INPUT_TYPES()["required"]["model_name"][0] == ["tiny_esrgan.pth"]
    handle, info = node.load("tiny_esrgan.pth")
    assert handle.scale == 4 and handle.arch == "ESRGAN" and info.startswith("Load Restoration Model")
    x = torch.rand(1, 20, 24, 3)
    out, info = RestoreKitRestoreWithModel().restore(handle, x, "auto", 0, 32, "auto")
    ref, report = run_model(handle, x, device="auto", overlap=32)  # the node's library call
    assert out.shape == (1, 80, 96, 3) and torch.equal(out, ref) and report.device == "cpu"


@pytest.mark.parametrize("name", ["../secret.pth", "/etc/passwd", "sub/../../secret.pth", "..\\secret.pth"])
def test_model_name_outside_folder_refused(model_dir, name):
    with pytest.raises(ValueError, match="outside the 'upscale_models' model folder"):
        RestoreKitLoadModel().load(name)


def test_symlink_escaping_folder_refused(model_dir, tmp_path):
    os.symlink(tmp_path / "secret.pth", model_dir / "link.pth")
    with pytest.raises(FileNotFoundError, match="link.pth"):
        RestoreKitLoadModel().load("link.pth")


def test_missing_model_name(model_dir):
    with pytest.raises(FileNotFoundError, match="gone.pth.*not found"):
        RestoreKitLoadModel().load("gone.pth")
