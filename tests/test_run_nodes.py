"""Every node of the pack from the shell (`restorekit run`), its generated --help, --set validation,
workflows in-process, and fp16/bf16 IMAGE inputs handled like float32 in every node."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import _workflows as W
from restorekit.hybrid.tools import cli, noderun, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the model files each model node needs (small random-weight files of the right architecture)
MODELS = {("upscale_models", "RealESRGAN_x4plus.pth"): "esrgan",
          ("upscale_models", "scunet_color_real_psnr.pth"): "scunet",
          ("restorekit", "sfhformer_haze_ots.pth"): "sfhformer",
          ("restorekit", "denoise.pth"): "noise_da"}
#: settings a node cannot default (which model file; a licence to accept) and extra image sockets
NEEDS = {
    "RestoreKitRealESRGAN": ["--set", "model_name=RealESRGAN_x4plus.pth"],
    "RestoreKitSCUNet": ["--set", "model_name=scunet_color_real_psnr.pth"],
    "RestoreKitSFHformer": ["--set", "model_name=sfhformer_haze_ots.pth"],
    "RestoreKitNoiseDA": ["--set", "model_name=denoise.pth", "--set", "accept_license=true"],
    "RestoreKitLoadModel": ["--set", "model_name=RealESRGAN_x4plus.pth"],
    "RestoreKitRestoreWithModel": ["--set", "model.model_name=RealESRGAN_x4plus.pth"],
    "RestoreKitColourJoin": ["--input", "a={grey}", "--input", "b={grey}"],
    "RestoreKitFrequencyCombine": ["--input", "high={grey}"],
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for (folder, name), arch in MODELS.items():
        W.MODEL_MAKERS[arch](str(d / folder / name))
    return str(d)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(3)
    base = np.linspace(0, 1, 40 * 48 * 3).reshape(40, 48, 3)
    rgb = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(d / "small.png")
    Image.fromarray((rgb[..., 1] * 255).astype(np.uint8)).save(d / "grey.png")
    return d


ALL_NODES = sorted(W.load_pack().NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("node_id", ALL_NODES)
def test_every_node_runs_from_the_shell_with_its_defaults(node_id, small, models_dir, tmp_path, capsys):
    extra = [a.format(grey=small / "grey.png") for a in NEEDS.get(node_id, [])]
    out = tmp_path / "out"
    cls = W.load_pack().NODE_CLASS_MAPPINGS[node_id]
    specs = workflow.input_specs(cls)
    takes_files = any(s.type == "IMAGE" and not s.is_widget for s in specs) or any(
        s.options.get("image_upload") for s in specs)
    inputs = [str(small / "small.png")] if takes_files else []
    rc = cli.main(["run", node_id, *inputs, "-o", str(out), "--models-dir", models_dir, "--no-progress", *extra])
    text = capsys.readouterr().out
    assert rc == 0, text
    with open(out / "run_report.json") as f:
        report = json.load(f)
    assert report["summary"]["counts"]["failed"] == 0 and report["node"] == node_id
    row = report["files"][0]
    n_files = list(cls.RETURN_TYPES).count("IMAGE") + (node_id == "RestoreKitSaveImage16")  # it writes one itself
    assert len(row.get("outputs", [])) == n_files
    for path in row.get("outputs", []):
        assert os.path.dirname(path) == str(out)
        assert os.path.isfile(path) and min(Image.open(path).size) > 0
    if "STRING" in cls.RETURN_TYPES:
        assert row["text"] and all(t.strip() for t in row["text"].values())


@pytest.mark.parametrize("node_id", ALL_NODES)
def test_node_help_lists_every_input_with_its_range(node_id, capsys):
    assert cli.main(["run", node_id, "--help"]) == 0
    text = capsys.readouterr().out
    cls = W.load_pack().NODE_CLASS_MAPPINGS[node_id]
    for spec in workflow.input_specs(cls):
        assert f"  {spec.name}: " in text, spec.name
        if spec.type in ("INT", "FLOAT") and "min" in spec.options:
            assert f"{spec.options['min']}..{spec.options['max']}" in text
        tip = spec.options.get("tooltip")
        if tip:
            assert tip[:40] in text


def test_run_list_and_name_matching(capsys):
    assert cli.main(["run", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in ALL_NODES)
    assert noderun.find_node("lbclahe") == noderun.find_node("RestoreKitLBCLAHE") == "RestoreKitLBCLAHE"
    assert noderun.find_node("Smart Sharpen") == "RestoreKitSmartSharpen"
    with pytest.raises(ValueError, match="did you mean"):
        noderun.find_node("SmartSharpn")


@pytest.mark.parametrize("setting, needle", [
    ("amount=9", "above max 5.0"), ("amount=-1", "below min"), ("amount=x", "wants a number"),
    ("space=hsv", "not in the choice list"), ("amont=1", "no setting 'amont'"), ("edge_adaptive=maybe", "true or false"),
])
def test_set_values_are_checked_like_comfyui(setting, needle, small, tmp_path, capsys):
    rc = cli.main(["run", "RestoreKitSmartSharpen", str(small / "small.png"), "-o", str(tmp_path), "--set", setting])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_set_changes_the_result_and_info(small, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["run", "RestoreKitRetinex", str(small / "small.png"), "-o", str(a), "--no-progress"]) == 0
    assert cli.main(["run", "RestoreKitRetinex", str(small / "small.png"), "-o", str(b), "--no-progress",
                     "--set", "mode=MSR"]) == 0
    text = capsys.readouterr().out
    assert "mode: MSR\n" in text
    x = np.asarray(Image.open(a / "small_retinex.png"), np.float64)
    y = np.asarray(Image.open(b / "small_retinex.png"), np.float64)
    assert np.abs(x - y).mean() > 1.0


def test_workflow_runs_in_process_on_given_files(small, tmp_path, capsys):
    wf = os.path.join(W.API_DIR, "sharpen.json")
    out = tmp_path / "out"
    rc = cli.main(["run", "--workflow", wf, str(small / "small.png"), str(small / "grey.png"), "-o", str(out),
                   "--no-progress", "--set", "2.amount=1.5"])
    assert rc == 0, capsys.readouterr()
    prefix = W.read_example(wf).prompt
    save = next(n for n in prefix.values() if n["class_type"] == "SaveImage")["inputs"]["filename_prefix"]
    assert (out / f"small_{save}.png").is_file() and (out / f"grey_{save}.png").is_file()
    assert Image.open(out / f"grey_{save}.png").mode == "L"  # grey in -> grey out through core LoadImage


def test_workflow_without_inputs_uses_its_own_image_and_ui_files_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "--workflow", os.path.join(W.API_DIR, "clahe.json"), "-o", str(out), "--no-progress"]) == 0
    ui_out = tmp_path / "ui"
    assert cli.main(["run", "--workflow", os.path.join(W.EXAMPLES_DIR, "clahe.json"), "-o", str(ui_out),
                     "--no-progress"]) == 0
    a = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    b = sorted(f for f in os.listdir(ui_out) if f.endswith(".png"))
    assert a == b and len(a) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(out / a[0])), np.asarray(Image.open(ui_out / b[0])))
    assert cli.main(["run", "--workflow", os.path.join(W.API_DIR, "nope.json"), "-o", str(out)]) == 2


# --- fp16 / bf16 IMAGE inputs (ComfyUI --fp16-intermediates) -------------------------------------------
@pytest.mark.parametrize("node_id", [n for n in ALL_NODES if n not in ("RestoreKitHybridRestore",)])
def test_half_precision_images_are_handled_like_float32(node_id, small, models_dir, tmp_path):
    cls = W.load_pack().NODE_CLASS_MAPPINGS[node_id]
    specs = workflow.input_specs(cls)
    sockets = [s for s in specs if not s.is_widget and s.type == "IMAGE"]
    if not sockets:
        pytest.skip("no IMAGE input")
    cli._register_models(models_dir)
    settings = {}
    args = NEEDS.get(node_id, [])
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "--set":
            k, v = value.split("=", 1)
            settings[k] = v
    rgb = np.asarray(Image.open(small / "small.png"), np.float32) / 255.0
    proc = noderun.NodeProcessor(node_id, settings, arrays={s.name: rgb for s in sockets[1:]})
    x = torch.from_numpy(rgb)[None]
    with workflow._adapter().image_folders(output=str(tmp_path)):  # Save Image (16-bit/float) writes here
        _compare_half_and_float(cls, proc, sockets, x)


def _compare_half_and_float(cls, proc, sockets, x):
    outs = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xin = x.to(dtype)
        kwargs = dict(proc.widgets, **{k: v for k, v in proc.sockets.items()})
        for s in sockets:
            kwargs[s.name] = xin
        outs[dtype] = (xin.float(), workflow.call_node(cls, kwargs))
    for dtype in (torch.float16, torch.bfloat16):
        # the reference: the float32 path on the same (rounded) values
        kwargs = dict(proc.widgets, **proc.sockets)
        for s in sockets:
            kwargs[s.name] = outs[dtype][0]
        ref = workflow.call_node(cls, kwargs)
        for i, t in enumerate(cls.RETURN_TYPES):
            if t == "IMAGE":
                got = outs[dtype][1][i]
                assert got.dtype == torch.float32, (dtype, i)
                torch.testing.assert_close(got, ref[i], atol=1e-5, rtol=0)


def test_hybrid_restore_accepts_half_precision(small):
    cls = W.load_pack().NODE_CLASS_MAPPINGS["RestoreKitHybridRestore"]
    x = torch.from_numpy(np.asarray(Image.open(small / "small.png"), np.float32) / 255.0)[None]
    a = cls().restore(x.to(torch.bfloat16).float(), "classical")[0]
    b = cls().restore(x.to(torch.bfloat16), "classical")[0]
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b)
