"""Run the examples in a real ComfyUI: start a headless CPU server with this pack, post each API example.

    COMFY_ROOT=/path/to/ComfyUI COMFY_VENV=/path/to/its/venv python tests/_comfy_server.py [NAME ...]

COMFY_ROOT is a ComfyUI source tree; COMFY_VENV the virtual environment its ``main.py`` runs in (default:
the Python running this script).  A fresh base directory is made in a temporary folder: custom_nodes/
holds a link to this repository, input/ the sample images of examples/images, models/ the small
random-weight files the examples name in ``_meta.models``.  Each example file is posted as it is (it IS
the POST /prompt body), then /history is polled until it succeeds or fails; every example must finish
with at least one output image that exists on disk.  The server is stopped by its own process id.
Exit status 0 when every example ran, 1 otherwise, 3 when the server did not start or the pack failed
to import.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workflows as W  # noqa: E402

PACK_NAME = "RestoreKit"


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    images: List[str] = field(default_factory=list)
    error: str = ""
    masks: List[str] = field(default_factory=list)  # "node id: white %" of each mask preview


class ComfyServer:
    """A headless ComfyUI (``--cpu``) on a free loopback port with this repository as a custom node pack
    (the process itself is the library's :class:`comfy_serve.ComfyProcess`, as in the Serve recipe)."""

    def __init__(self, comfy_root: str, python: str, base: str, start_timeout: float = 240.0):
        self.root, self.python, self.base = comfy_root, python, base
        self.start_timeout = start_timeout
        self.process = None
        self.url = ""

    def __enter__(self):
        from restorekit.hybrid.tools.comfy_serve import ComfyProcess

        for d in ("custom_nodes", "input", "output", "temp", "user", "models"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        link = os.path.join(self.base, "custom_nodes", PACK_NAME)
        if not os.path.exists(link):
            os.symlink(W.REPO, link)
        for f in W.image_files():
            shutil.copy(os.path.join(W.IMAGES_DIR, f), os.path.join(self.base, "input", f))
        self.process = ComfyProcess(self.root, self.python, base_directory=self.base, workdir=self.base,
                                    extra_args=["--disable-api-nodes"], start_timeout=self.start_timeout,
                                    require_pack=False)  # import_problem() says why, with the log
        self.port, self.url, self.log_path = self.process.port, self.process.url, self.process.log_path
        self.start_seconds = self.process.start_seconds
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.process is not None:
            self.process.stop()

    def log_tail(self, n: int = 40) -> str:
        return self.process.log_tail(n) if self.process is not None else ""

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # --- HTTP ---------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def import_problem(self) -> str:
        """'' when the pack imported, else the log lines that say it did not."""
        text = self.log()
        bad = [l for l in text.splitlines() if "IMPORT FAILED" in l and PACK_NAME in l]
        if bad:
            return "\n".join(bad) + "\n" + self.log_tail(60)
        if "RestoreKit: node family" in text:
            return "\n".join(l for l in text.splitlines() if "RestoreKit" in l)
        return ""

    def pack_nodes(self) -> List[str]:
        info = self.get("/object_info")
        return sorted(k for k, v in info.items() if v.get("python_module") == f"custom_nodes.{PACK_NAME}")

    def templates(self) -> List[str]:
        """Workflow names ComfyUI's Templates browser lists for this pack (GET /workflow_templates)."""
        return sorted(self.get("/workflow_templates").get(PACK_NAME, []))

    def template_served(self, name: str) -> str:
        """'' when the UI workflow and its thumbnail are served as templates, else what is wrong."""
        for ext in (".json", ".jpg"):
            local = os.path.join(W.EXAMPLES_DIR, name + ext)
            try:
                with urllib.request.urlopen(f"{self.url}/api/workflow_templates/{PACK_NAME}/{name}{ext}",
                                            timeout=30) as r:
                    served = r.read()
            except urllib.error.URLError as exc:
                return f"template {name}{ext} not served: {exc}"
            with open(local, "rb") as f:
                if f.read() != served:
                    return f"template {name}{ext} served differs from {local}"
        return ""

    def run(self, example: W.Example, timeout: float = 600.0) -> Outcome:
        t0 = time.time()
        body = dict(example.body)
        body["client_id"] = str(uuid.uuid4())
        status, reply = self.post("/prompt", body)
        if status != 200:
            return Outcome(example.name, False, time.time() - t0,
                           error=f"HTTP {status}: {json.dumps(reply.get('error'))} {json.dumps(reply.get('node_errors'))}"[:2000])
        pid = reply["prompt_id"]
        while True:
            hist = self.get(f"/history/{pid}").get(pid)
            st = (hist or {}).get("status") or {}
            if st.get("completed") or st.get("status_str") == "error":
                break
            if time.time() - t0 > timeout:
                return Outcome(example.name, False, time.time() - t0, error=f"timeout after {timeout:.0f} s")
            time.sleep(0.25)
        dt = time.time() - t0
        if st.get("status_str") != "success":
            msgs = [m for m in st.get("messages", []) if m[0] == "execution_error"]
            detail = msgs[0][1] if msgs else st
            if isinstance(detail, dict):
                detail = (f"node {detail.get('node_id')} ({detail.get('node_type')}): "
                          f"{detail.get('exception_type')}: {detail.get('exception_message')}")
            return Outcome(example.name, False, dt, error=str(detail)[:2000])
        images = []
        for out in hist.get("outputs", {}).values():
            for im in out.get("images", []):
                if im.get("type") == "output":
                    images.append(os.path.join(self.base, "output", im.get("subfolder", ""), im["filename"]))
        missing = [p for p in images if not os.path.isfile(p)]
        if not images or missing:
            return Outcome(example.name, False, dt, images, error=f"no output image on disk (missing {missing})")
        prompt = example.prompt
        shown = {nid for nid, out in hist.get("outputs", {}).items() if out.get("images")}
        silent = [nid for nid, n in prompt.items() if n["class_type"] in ("SaveImage", "PreviewImage") and nid not in shown]
        if silent:
            return Outcome(example.name, False, dt, images, error=f"image node(s) {silent} showed no image")
        return Outcome(example.name, True, dt, images, masks=self._mask_previews(prompt, hist))

    def _mask_previews(self, prompt: dict, hist: dict) -> List[str]:
        """For each PreviewImage fed by MaskToImage: the share of white (masked) pixels it shows."""
        import io
        import urllib.parse

        import numpy as np
        from PIL import Image

        out = []
        for nid, node in prompt.items():
            src = node["inputs"].get("images")
            if node["class_type"] != "PreviewImage" or not W.is_link(src) or \
                    prompt[src[0]]["class_type"] != "MaskToImage":
                continue
            for im in hist["outputs"][nid]["images"]:
                query = urllib.parse.urlencode({k: im.get(k, "") for k in ("filename", "subfolder", "type")})
                with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as r:  # as the UI shows it
                    white = float((np.asarray(Image.open(io.BytesIO(r.read())).convert("L")) > 127).mean())
                out.append(f"mask preview {nid}: {100 * white:.2f} % white")
        return out


def run_examples(comfy_root: str, python: str, names=None, base: Optional[str] = None,
                 echo=print) -> List[Outcome]:
    """Start one server, post every (or the named) API example, return one Outcome each."""
    examples = [e for e in W.load_examples() if not names or e.name in names]
    W.load_pack()
    own_tmp = base is None
    base = base or tempfile.mkdtemp(prefix="restorekit-comfy-")
    try:
        for ex in examples:
            W.write_models(ex, os.path.join(base, "models"))
        with ComfyServer(comfy_root, python, base) as server:
            echo(f"SERVER_READY port={server.port} start_s={server.start_seconds:.1f}")
            problem = server.import_problem()
            if problem:
                raise RuntimeError(f"RestoreKit failed to import in ComfyUI:\n{problem}")
            nodes = server.pack_nodes()
            echo(f"PACK_NODES {len(nodes)}: {', '.join(nodes)}")
            templates = server.templates()
            echo(f"TEMPLATES {len(templates)}: {', '.join(templates)}")
            outcomes = []
            for ex in examples:
                o = server.run(ex)
                if o.ok:
                    problem = server.template_served(ex.name) if ex.name in templates else \
                        f"UI workflow examples/{ex.name}.json not listed by /workflow_templates"
                    if problem:
                        o.ok, o.error = False, problem
                outcomes.append(o)
                if o.ok:
                    echo(f"OK   {o.name} {o.seconds:.1f} s -> {', '.join(os.path.basename(p) for p in o.images)}"
                         + "".join(f"; {m}" for m in o.masks))
                else:
                    echo(f"FAIL {o.name} {o.seconds:.1f} s: {o.error}")
            return outcomes
    finally:
        if own_tmp:
            shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = os.environ.get("COMFY_ROOT")
    if not root:
        print("set COMFY_ROOT to a ComfyUI source tree (and COMFY_VENV to its venv)", file=sys.stderr)
        return 64
    venv = os.environ.get("COMFY_VENV")
    python = os.path.join(venv, "bin", "python") if venv else sys.executable
    try:
        outcomes = run_examples(root, python, argv or None)
    except RuntimeError as exc:
        print(f"ERROR {exc}")
        return 3
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
