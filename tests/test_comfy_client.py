"""The ComfyUI workers client (hybrid/tools/comfy_client.py) against small stand-ins of ComfyUI's HTTP API
and of the Ray Serve endpoint (standard-library servers on loopback): prompts prepared from the
examples, work spread over servers, a server that dies mid-run, failures reported, existing files
never overwritten.  The real thing (2 ComfyUI servers, Ray Serve) is tests/test_comfy_workers.py."""
import glob
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from restorekit.hybrid.tools import cli
from restorekit.hybrid.tools import comfy_client as cc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(REPO, "examples", "api")
CLAHE = os.path.join(API, "clahe.json")


# --- a stand-in ComfyUI: the prompt "runs" by saving the uploaded file as each SaveImage's output --------
class FakeComfy:
    """``/system_stats``, ``/upload/image``, ``/prompt``, ``/history/<id>``, ``/view``, ``/queue``.
    Images whose name contains ``bad`` fail like a node error; ``die_after`` prompts stop the server;
    ``hang_then_die`` seconds: the first prompt gets no answer, then the server stops."""

    def __init__(self, die_after=None, hang_then_die=None):
        self.uploads, self.outputs, self.history, self.ran = {}, {}, {}, []
        self.die_after = die_after
        self.hang_then_die = hang_then_die
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, code=200, raw=None):
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                if u.path == "/system_stats":
                    return self._send({"system": {}})
                if u.path == "/queue":
                    return self._send({"queue_running": [], "queue_pending": []})
                if u.path.startswith("/history/"):
                    pid = u.path.rsplit("/", 1)[1]
                    return self._send({pid: fake.history[pid]} if pid in fake.history else {})
                if u.path == "/view":
                    q = urllib.parse.parse_qs(u.query)
                    key = f"{q['subfolder'][0]}/{q['filename'][0]}"
                    return self._send(None, raw=fake.outputs[key])
                self._send({}, 404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/upload/image":
                    boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
                    fields = {}
                    for part in body.split(b"--" + boundary):
                        if b"Content-Disposition" not in part:
                            continue
                        head, _, data = part.partition(b"\r\n\r\n")
                        name = head.split(b'name="')[1].split(b'"')[0].decode()
                        fields[name] = (head, data[:-2])
                    filename = fields["image"][0].split(b'filename="')[1].split(b'"')[0].decode()
                    sub = fields["subfolder"][1].decode()
                    fake.uploads[f"{sub}/{filename}"] = fields["image"][1]
                    return self._send({"name": filename, "subfolder": sub, "type": "input"})
                if self.path == "/prompt":
                    if fake.hang_then_die is not None:
                        time.sleep(fake.hang_then_die)
                        self.close_connection = True
                        threading.Thread(target=fake.stop, daemon=True).start()
                        return None
                    req = json.loads(body)
                    prompt = req["prompt"]
                    loader = next(n for n in prompt.values() if n["class_type"] in cc.LOADER_CLASSES)
                    pid = f"p{len(fake.history)}-{id(fake)}"
                    image = loader["inputs"]["image"]
                    if image not in fake.uploads:
                        return self._send({"error": {"message": "Prompt outputs failed validation"},
                                           "node_errors": {"1": {"class_type": "LoadImage", "errors": [
                                               {"message": "Invalid image file", "details": image}]}}}, 400)
                    fake.ran.append(image)
                    if "bad" in image.split("-", 1)[-1]:  # the file's own name, not the client's hex tag
                        fake.history[pid] = {"status": {"status_str": "error", "completed": False, "messages": [
                            ["execution_error", {"node_id": "1", "node_type": "LoadImage",
                                                 "exception_type": "UnidentifiedImageError",
                                                 "exception_message": "cannot identify image file"}]]},
                                             "outputs": {}}
                    else:
                        outs = {}
                        for nid, n in prompt.items():
                            if n["class_type"] == "SaveImage":
                                sub, fn = n["inputs"]["filename_prefix"].rsplit("/", 1)
                                fake.outputs[f"{sub}/{fn}_00001_.png"] = fake.uploads[image]
                                outs[nid] = {"images": [{"filename": f"{fn}_00001_.png", "subfolder": sub,
                                                         "type": "output"}]}
                        fake.history[pid] = {"status": {"status_str": "success", "completed": True, "messages": []},
                                             "outputs": outs}
                    self._send({"prompt_id": pid, "number": 0, "node_errors": {}})
                    if fake.die_after is not None and len(fake.ran) >= fake.die_after:
                        threading.Thread(target=fake.stop, daemon=True).start()
                    return None
                if self.path == "/queue":
                    return self._send({})
                self._send({}, 404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def images(tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --- the prompt ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(API, "*.json"))), ids=os.path.basename)
def test_every_api_example_can_be_fed_one_image(path):
    body = cc.read_body(path)
    loader = cc.find_loader(body["prompt"])
    names = cc.save_names(body["prompt"])
    sent = cc.prepare(body, loader, "restorekit_submit/x.png", "tag1")
    assert sent["prompt"][loader]["inputs"]["image"] == "restorekit_submit/x.png"
    assert body["prompt"][loader]["inputs"]["image"] != "restorekit_submit/x.png"  # the template is not changed
    assert len(set(names.values())) == len(names) >= 1
    for nid, name in names.items():
        assert sent["prompt"][nid]["inputs"]["filename_prefix"] == f"restorekit_submit/tag1/{name}"


def test_prompt_errors_are_clear(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(ValueError, match="Save \\(API\\)"):
        cc.read_body(str(ui))
    two = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
           "2": {"class_type": "LoadImage", "inputs": {"image": "b.png"}}}
    with pytest.raises(ValueError, match="--loader"):
        cc.find_loader(two)
    assert cc.find_loader(two, "2") == "2"
    with pytest.raises(ValueError, match="no SaveImage"):
        cc.save_names(two)


def test_write_new_never_overwrites(tmp_path):
    p = str(tmp_path / "a.png")
    assert cc.write_new(p, b"1") == p
    assert cc.write_new(p, b"2") == str(tmp_path / "a_1.png")
    assert cc.write_new(p, b"3", overwrite=True) == p
    assert open(p, "rb").read() == b"3" and open(tmp_path / "a_1.png", "rb").read() == b"2"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


# --- many servers ----------------------------------------------------------------------------------------
def test_folder_is_spread_over_servers_and_a_dead_one_loses_nothing(images, tmp_path):
    a, b = FakeComfy(), FakeComfy(die_after=1)  # b dies right after accepting its first prompt
    try:
        rep = cc.submit([str(images)], CLAHE, str(tmp_path / "out"), servers=[a.url, b.url])
    finally:
        a.stop()
    rows = {os.path.basename(r["input"]): r for r in rep["files"]}
    assert sorted(rows) == [f"img{i}.png" for i in range(6)]  # notes.txt is not an image
    assert rep["counts"] == {"processed": 6, "skipped": 0, "failed": 0}
    assert rep["per_worker"].get(a.url, 0) >= 5  # b ran at most one before it went away
    for i in range(6):
        out = tmp_path / "out" / f"img{i}_restorekit_lbclahe.png"
        assert out.read_bytes() == (images / f"img{i}.png").read_bytes()  # the fake's output is its input
    assert os.path.exists(rep["report"]) and json.load(open(rep["report"]))["counts"] == rep["counts"]


def test_a_file_handed_back_after_the_queue_emptied_is_still_run(images, tmp_path):
    """b holds its file until a has drained the queue, then dies: a must still be there to take it back
    (a worker that left once the queue looked empty lost it — seen as a flaky failure under load)."""
    a, b = FakeComfy(), FakeComfy(hang_then_die=1.0)
    try:
        rep = cc.submit([str(images)], CLAHE, str(tmp_path / "out"), servers=[b.url, a.url])
    finally:
        a.stop()
    assert rep["counts"] == {"processed": 6, "skipped": 0, "failed": 0}, rep["files"]
    assert rep["per_worker"].get(a.url, 0) == 6


def test_failures_are_reported_and_existing_outputs_kept(images, tmp_path, capsys):
    (images / "bad.png").write_bytes(b"not a png")
    s1, s2 = FakeComfy(), FakeComfy()
    out = tmp_path / "out"
    try:
        args = [str(images), "--prompt", CLAHE, "-o", str(out), "--server", s1.url, "--server", s2.url]
        assert cli.main(["submit"] + args) == 1
        text = capsys.readouterr().out
        assert "bad.png: failed (node 1 (LoadImage): UnidentifiedImageError" in text
        assert "processed 6, skipped 0, failed 1" in text
        assert cli.main(["submit"] + args) == 1  # again: new names, nothing overwritten
        assert (out / "img0_restorekit_lbclahe_1.png").exists()
        n_files = len(os.listdir(out))
        assert cli.main(["submit"] + args + ["--skip-existing"]) == 1  # only bad.png is tried again
        assert "processed 0, skipped 6, failed 1" in capsys.readouterr().out
        assert len(os.listdir(out)) == n_files + 1  # the third report
    finally:
        s1.stop()
        s2.stop()


def test_no_server_answering_is_a_usage_error(images, tmp_path, capsys):
    dead = FakeComfy()
    dead.stop()
    assert cc.main([str(images), "--prompt", CLAHE, "-o", str(tmp_path / "o"), "--server", dead.url]) == 2
    assert "no ComfyUI server answered" in capsys.readouterr().err


# --- through a Serve endpoint ----------------------------------------------------------------------------
class FakeServe:
    """The Serve endpoint's contract (comfy_serve.ComfyWorker.handle): the first request for each image
    gets HTTP 503 (a replica restarting), the retry succeeds."""

    def __init__(self):
        self.calls = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append(req["name"])
                if fake.calls.count(req["name"]) == 1:
                    data, code = b"replica unavailable", 503
                else:
                    nid = next(k for k, n in req["body"]["prompt"].items() if n["class_type"] == "SaveImage")
                    data, code = json.dumps({"ok": True, "worker": "fake:1", "seconds": 0.01, "outputs": [
                        {"node": nid, "filename": "x.png", "data": req["image"]}]}).encode(), 200
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/restorekit"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_serve_endpoint_requests_are_retried(images, tmp_path, monkeypatch):
    monkeypatch.setattr(cc.time, "sleep", lambda s: None)
    fake = FakeServe()
    try:
        rep = cc.submit([str(images)], CLAHE, str(tmp_path / "out"), serve_url=fake.url, concurrency=3)
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
    assert rep["counts"] == {"processed": 6, "skipped": 0, "failed": 0}
    assert sorted(fake.calls) == sorted([f"img{i}.png" for i in range(6)] * 2)
    for i in range(6):
        assert (tmp_path / "out" / f"img{i}_restorekit_lbclahe.png").read_bytes() == \
            (images / f"img{i}.png").read_bytes()


def test_client_module_needs_only_the_standard_library():
    """comfy_client.py runs on a machine without RestoreKit: it imports nothing outside the stdlib."""
    import ast
    import sys

    tree = ast.parse(open(cc.__file__).read())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert mods - {"__future__"} <= set(sys.stdlib_module_names)
