"""Submit a folder of images as ComfyUI API prompts to many workers and collect the results.

Standard library only: this file also runs on its own (``python comfy_client.py ...``) on a machine
without RestoreKit.  Two ways to reach the workers:

* ``--serve URL``: one Ray Serve endpoint in front of N ComfyUI servers (:mod:`.comfy_serve`, the
  recommended recipe).  The client keeps ``--concurrency`` requests open; Serve holds them in its
  queue and gives each to a replica with nothing running (``max_ongoing_requests=1``), so the least
  loaded server gets the next image, a dead replica is replaced, and servers can be added.
* ``--server URL`` (repeated): plain ComfyUI servers, no Ray.  One thread per server takes the next
  image from a shared queue whenever its server has finished the last one (each server has one of
  our prompts at a time), so faster servers take more.  A server that stops answering is dropped
  and its image goes back to the queue for the others.

Each image is uploaded with ComfyUI's ``POST /upload/image``, put into the prompt's one image
loader (``LoadImage`` or RestoreKit's 16-bit loader, or ``--loader NODE_ID``), queued with
``POST /prompt``, followed with ``GET /history/<id>`` (bounded by ``--timeout``) and its output
images fetched with ``GET /view``.  The prompt file is an ``examples/api/*.json`` body (or a bare
API prompt); UI-format workflows are refused (export them with "Save (API)").

Outputs: ``<OUT>/<stem>_<filename_prefix>.png`` per SaveImage node (``_<k>`` for a batch's later
images), the names ``restorekit run --workflow`` gives; files appear atomically and existing files
are never overwritten (a free ``_1`` name is used) unless ``--overwrite``; ``--skip-existing``
skips images whose outputs all exist.  A JSON report (one row per image: status, outputs, worker,
seconds, reason) is written into OUT.  Exit status: 0 all done, 1 some failed, 2 usage error.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import queue
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: nodes whose ``image`` input names a file in ComfyUI's input folder
LOADER_CLASSES = ("LoadImage", "RestoreKitLoadImage16")
SAVE_CLASS = "SaveImage"
UPLOAD_SUBFOLDER = "restorekit_submit"


class ComfyError(RuntimeError):
    """A prompt failed on the server (validation or execution); the message says which node and why."""


class ServerGone(RuntimeError):
    """The server did not answer (connection refused, reset or timed out)."""


@dataclass
class Output:
    node: str
    filename: str
    data: bytes


# --- the prompt -----------------------------------------------------------------------------------------
def read_body(path: str) -> Dict[str, object]:
    """An ``examples/api/*.json`` body (``{"prompt": {...}}``) or a bare API prompt -> the body."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise ValueError(f"{path} is a UI workflow; export it from ComfyUI with 'Save (API)'")
    body = data if isinstance(data, dict) and isinstance(data.get("prompt"), dict) else {"prompt": data}
    prompt = body["prompt"]
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        raise ValueError(f"{path} is not an API prompt (node id -> {{class_type, inputs}})")
    return {"prompt": prompt}


def find_loader(prompt: Dict[str, dict], node_id: Optional[str] = None) -> str:
    """The id of the prompt's one image loader (or ``node_id``, checked)."""
    if node_id is not None:
        if node_id not in prompt or "image" not in prompt[node_id].get("inputs", {}):
            raise ValueError(f"--loader {node_id}: no node with an 'image' input of that id in the prompt")
        return node_id
    found = [nid for nid, n in prompt.items() if n.get("class_type") in LOADER_CLASSES]
    if len(found) != 1:
        raise ValueError(f"the prompt has {len(found)} image loaders ({', '.join(LOADER_CLASSES)}); "
                         f"name the one to feed with --loader NODE_ID")
    return found[0]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "output"


def save_names(prompt: Dict[str, dict]) -> Dict[str, str]:
    """SaveImage node id -> the name its outputs get (last part of its filename_prefix), unique."""
    names: Dict[str, str] = {}
    for nid in sorted((k for k, n in prompt.items() if n.get("class_type") == SAVE_CLASS),
                      key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)):
        prefix = str(prompt[nid].get("inputs", {}).get("filename_prefix", "ComfyUI"))
        name = _safe(prefix.replace("\\", "/").rstrip("/").split("/")[-1])
        names[nid] = name if name not in names.values() else f"{name}_{nid}"
    if not names:
        raise ValueError(f"the prompt has no {SAVE_CLASS} node: nothing would come back")
    return names


def prepare(body: Dict[str, object], loader: str, image_name: str, tag: str) -> Dict[str, object]:
    """A copy of ``body`` whose loader reads ``image_name`` and whose SaveImage nodes write under a
    prefix of their own (``restorekit_submit/<tag>/...``), so concurrent prompts never share files."""
    out = copy.deepcopy(body)
    prompt = out["prompt"]
    prompt[loader]["inputs"]["image"] = image_name
    for nid, name in save_names(prompt).items():
        prompt[nid]["inputs"]["filename_prefix"] = f"{UPLOAD_SUBFOLDER}/{tag}/{name}"
    out["client_id"] = tag
    return out


# --- one server ------------------------------------------------------------------------------------------
class ComfyAPI:
    """ComfyUI's HTTP API on one server (``url`` like ``http://127.0.0.1:8188``)."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = float(timeout)

    def _open(self, req, timeout: Optional[float] = None):
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as exc:
            raise ServerGone(f"{self.url}: {getattr(exc, 'reason', exc)}") from None

    def get_json(self, path: str):
        with self._open(self.url + path) as r:
            return json.loads(r.read())

    def post_json(self, path: str, body) -> Tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with self._open(req) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {"error": {"message": f"HTTP {exc.code}"}}

    def ready(self) -> bool:
        try:
            self.get_json("/system_stats")
            return True
        except (ServerGone, urllib.error.HTTPError, ValueError):
            return False

    def load(self) -> int:
        """Prompts running and waiting on the server."""
        q = self.get_json("/queue")
        return len(q.get("queue_running", [])) + len(q.get("queue_pending", []))

    def upload(self, name: str, data: bytes, subfolder: str = UPLOAD_SUBFOLDER) -> str:
        """``POST /upload/image`` (multipart form); returns the value a loader's ``image`` input takes."""
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (("type", "input"), ("subfolder", subfolder), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        req = urllib.request.Request(self.url + "/upload/image", data=b"".join(parts),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with self._open(req) as r:
                reply = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise ComfyError(f"upload of {name} refused: HTTP {exc.code}") from None
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def view(self, filename: str, subfolder: str, kind: str) -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        with self._open(f"{self.url}/view?{q}") as r:
            return r.read()

    def run(self, body: Dict[str, object], loader: str, name: str, data: bytes, timeout: float = 600.0,
            poll: float = 0.2) -> Tuple[List[Output], List[Tuple[str, str, str]]]:
        """Upload ``data`` as ``name``, run the prompt on it, return its SaveImage outputs (and their
        (filename, subfolder, type) on the server).  ``ComfyError`` when the prompt fails;
        ``ServerGone`` when the server stops answering."""
        tag = uuid.uuid4().hex[:12]
        stored = self.upload(f"{tag}-{_safe(name)}", data)
        sent = prepare(body, loader, stored, tag)
        status, reply = self.post_json("/prompt", sent)
        if status != 200:
            raise ComfyError(_prompt_error(reply, status))
        pid = reply["prompt_id"]
        t0 = time.monotonic()
        while True:
            entry = self.get_json(f"/history/{pid}").get(pid)
            st = (entry or {}).get("status") or {}
            if st.get("completed") or st.get("status_str") == "error":
                break
            if time.monotonic() - t0 > timeout:
                self.post_json("/queue", {"delete": [pid]})
                raise ComfyError(f"no result within {timeout:.0f} s (prompt {pid} removed from the queue)")
            time.sleep(poll)
        if st.get("status_str") != "success":
            raise ComfyError(_execution_error(st))
        saves = set(save_names(sent["prompt"]))
        outputs, files = [], []
        for nid, out in sorted(entry.get("outputs", {}).items()):
            if nid not in saves:
                continue
            for im in out.get("images", []):
                if im.get("type") == "output":
                    outputs.append(Output(nid, im["filename"], self.view(im["filename"], im.get("subfolder", ""), "output")))
                    files.append((im["filename"], im.get("subfolder", ""), "output"))
        files.append((stored.split("/")[-1], UPLOAD_SUBFOLDER, "input"))
        if not outputs:
            raise ComfyError("the prompt finished without an output image")
        return outputs, files


def _prompt_error(reply: dict, status: int) -> str:
    err = reply.get("error") or {}
    msg = err.get("message", f"HTTP {status}") if isinstance(err, dict) else str(err)
    details = []
    for nid, ne in (reply.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            details.append(f"node {nid} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "prompt refused: " + msg + ("; " + "; ".join(details) if details else "")


def _execution_error(status: dict) -> str:
    for kind, info in status.get("messages", []):
        if kind == "execution_error":
            return (f"node {info.get('node_id')} ({info.get('node_type')}): {info.get('exception_type')}: "
                    f"{info.get('exception_message')}".strip())
    return f"prompt failed ({status.get('status_str')})"


# --- many servers ----------------------------------------------------------------------------------------
def list_images(inputs: Sequence[str]) -> List[str]:
    """Image files of ``inputs`` (files, or folders: their image files by extension, sorted; hidden
    files ignored)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += [os.path.join(item, n) for n in sorted(os.listdir(item))
                      if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
                      and os.path.isfile(os.path.join(item, n))]
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"'{item}' is neither a file nor a folder")
    return files


def _free_name(path: str) -> str:
    stem, ext = os.path.splitext(path)
    cand, i = path, 0
    while os.path.exists(cand):
        i += 1
        cand = f"{stem}_{i}{ext}"
    return cand


def write_new(path: str, data: bytes, overwrite: bool = False) -> str:
    """Write ``data`` atomically at ``path`` (or, unless ``overwrite``, the next free ``_N`` name if a
    file is there, even one that appeared meanwhile); returns the path written."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.part")
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        if overwrite:
            os.replace(tmp, path)
            return path
        for _ in range(10000):
            target = _free_name(path)
            try:
                os.link(tmp, target)  # fails if the name was taken since: never overwrites
                return target
            except FileExistsError:
                continue
        raise OSError(f"no free name for {path}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass
class Job:
    body: Dict[str, object]
    loader: str
    out_dir: str
    existing: str = "rename"                  # rename | skip | overwrite
    timeout: float = 600.0
    names: Dict[str, str] = field(default_factory=dict)

    def targets(self, src: str) -> Dict[str, str]:
        stem = os.path.splitext(os.path.basename(src))[0]
        return {nid: os.path.join(self.out_dir, f"{stem}_{name}.png") for nid, name in self.names.items()}

    def save(self, src: str, outputs: List[Output]) -> List[str]:
        targets, seen, written = self.targets(src), {}, []
        for o in outputs:
            k = seen.get(o.node, 0)
            seen[o.node] = k + 1
            target = targets.get(o.node) or os.path.join(self.out_dir, f"{os.path.splitext(os.path.basename(src))[0]}_{o.node}.png")
            if k:
                stem, ext = os.path.splitext(target)
                target = f"{stem}_{k}{ext}"
            written.append(write_new(target, o.data, overwrite=self.existing == "overwrite"))
        return written


def _row(src: str, status: str, **fields) -> Dict[str, object]:
    return {"input": src, "status": status, **{k: v for k, v in fields.items() if v not in (None, "", [])}}


def _take(todo: "queue.Queue"):
    """The queue's items until it is empty (several threads take from one queue)."""
    while True:
        try:
            yield todo.get_nowait()
        except queue.Empty:
            return


def _take_until_all_done(todo: "queue.Queue", lock: threading.Lock, inflight: Dict[str, int]):
    """The queue's items until it is empty *and* no other worker holds one: a file a dying server hands
    back is still taken by a live one (a worker that left as soon as the queue looked empty lost it)."""
    while True:
        with lock:
            try:
                src = todo.get_nowait()
                inflight["n"] += 1
            except queue.Empty:
                if inflight["n"] == 0:
                    return
                src = None
        if src is None:
            time.sleep(0.02)
            continue
        try:
            yield src
        finally:
            with lock:
                inflight["n"] -= 1


def _direct_worker(api: ComfyAPI, job: Job, todo: "queue.Queue", done: Callable, alive: Dict[str, bool],
                   lock: threading.Lock, attempts: Dict[str, int], max_attempts: int,
                   inflight: Dict[str, int]) -> None:
    for src in _take_until_all_done(todo, lock, inflight):
        t0 = time.monotonic()
        try:
            with open(src, "rb") as f:
                data = f.read()
            outputs, _files = api.run(job.body, job.loader, os.path.basename(src), data, timeout=job.timeout)
            done(_row(src, "processed", outputs=job.save(src, outputs), worker=api.url,
                      seconds=round(time.monotonic() - t0, 3)))
        except ServerGone as exc:
            with lock:
                alive[api.url] = False
                attempts[src] = attempts.get(src, 0) + 1
                others = any(alive.values())
            if others and attempts[src] < max_attempts:
                todo.put(src)  # another server takes it
            else:
                done(_row(src, "failed", reason=f"server gone: {exc}", worker=api.url))
            return  # this server is dropped
        except (ComfyError, OSError, ValueError) as exc:
            done(_row(src, "failed", reason=str(exc), worker=api.url, seconds=round(time.monotonic() - t0, 3)))


def _serve_worker(url: str, job: Job, todo: "queue.Queue", done: Callable, retries: int) -> None:
    for src in _take(todo):
        t0 = time.monotonic()
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as exc:
            done(_row(src, "failed", reason=str(exc)))
            continue
        payload = json.dumps({"body": job.body, "loader": job.loader, "name": os.path.basename(src),
                              "image": base64.b64encode(data).decode(), "timeout": job.timeout}).encode()
        reply, error = None, ""
        for attempt in range(retries + 1):
            req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=job.timeout + 120) as r:
                    reply = json.loads(r.read())
                break
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code} from {url}: {exc.read()[:500].decode(errors='replace')}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as exc:
                error = f"{url}: {getattr(exc, 'reason', exc)}"
            time.sleep(min(10.0, 1.0 * 2 ** attempt))
        if reply is None:
            done(_row(src, "failed", reason=error, seconds=round(time.monotonic() - t0, 3)))
        elif not reply.get("ok"):
            done(_row(src, "failed", reason=reply.get("error", "failed"), worker=reply.get("worker"),
                      seconds=round(time.monotonic() - t0, 3)))
        else:
            outs = [Output(o["node"], o["filename"], base64.b64decode(o["data"])) for o in reply["outputs"]]
            try:
                written = job.save(src, outs)
            except OSError as exc:
                done(_row(src, "failed", reason=f"cannot write the output: {exc}", worker=reply.get("worker")))
                continue
            done(_row(src, "processed", outputs=written, worker=reply.get("worker"),
                      seconds=round(time.monotonic() - t0, 3), server_seconds=reply.get("seconds"),
                      worker_share=reply.get("share")))


def submit(inputs: Sequence[str], prompt_path: str, out_dir: str, *, servers: Sequence[str] = (),
           serve_url: Optional[str] = None, concurrency: int = 0, existing: str = "rename",
           timeout: float = 600.0, loader: Optional[str] = None, retries: int = 2,
           on_row: Optional[Callable[[Dict[str, object]], None]] = None) -> Dict[str, object]:
    """Run the prompt on every image of ``inputs`` across ``servers`` (plain ComfyUI) or through
    ``serve_url`` (Ray Serve); write the outputs and a JSON report into ``out_dir``; return the report."""
    if bool(servers) == bool(serve_url):
        raise ValueError("give either ComfyUI servers (--server URL ...) or one Ray Serve endpoint (--serve URL)")
    if existing not in ("rename", "skip", "overwrite"):
        raise ValueError(f"existing must be rename, skip or overwrite, got {existing!r}")
    body = read_body(prompt_path)
    job = Job(body, find_loader(body["prompt"], loader), os.path.abspath(out_dir), existing, float(timeout),
              save_names(body["prompt"]))
    files = list_images(inputs)
    os.makedirs(job.out_dir, exist_ok=True)
    rows: List[Dict[str, object]] = []
    lock = threading.Lock()

    def done(r):
        with lock:
            rows.append(r)
            if on_row:
                on_row(r)

    todo: "queue.Queue[str]" = queue.Queue()
    for src in files:
        if existing == "skip" and all(os.path.exists(t) for t in job.targets(src).values()):
            done(_row(src, "skipped", reason="outputs exist; --skip-existing"))
        else:
            todo.put(src)
    t0 = time.monotonic()
    if servers:
        apis = [ComfyAPI(u) for u in dict.fromkeys(servers)]
        alive = {a.url: a.ready() for a in apis}
        if not any(alive.values()):
            raise ServerGone("no ComfyUI server answered: " + ", ".join(alive))
        attempts: Dict[str, int] = {}
        inflight = {"n": 0}
        threads = [threading.Thread(target=_direct_worker, args=(a, job, todo, done, alive, lock, attempts, 2,
                                                                 inflight), daemon=True)
                   for a in apis if alive[a.url]]
    else:
        n = int(concurrency) or 8
        threads = [threading.Thread(target=_serve_worker, args=(serve_url, job, todo, done, retries), daemon=True)
                   for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while not todo.empty():  # every server died: what is left is reported, not lost
        done(_row(todo.get_nowait(), "failed", reason="no server left to run it"))
    wall = time.monotonic() - t0
    order = {src: i for i, src in enumerate(files)}
    rows.sort(key=lambda r: order.get(r["input"], 0))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("processed", "skipped", "failed")}
    workers: Dict[str, int] = {}
    for r in rows:
        if r["status"] == "processed":
            workers[str(r.get("worker"))] = workers.get(str(r.get("worker")), 0) + 1
    report = {"files": rows, "counts": counts, "per_worker": workers, "seconds": round(wall, 3),
              "images_per_second": round(counts["processed"] / wall, 4) if wall > 0 else None,
              "prompt": os.path.abspath(prompt_path), "servers": list(servers), "serve": serve_url}
    path = _free_name(os.path.join(job.out_dir, "comfy_report.json"))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(report, report=path), f, indent=1)
    report["report"] = path
    return report


def _print_row(r: Dict[str, object]) -> None:
    if r["status"] == "processed":
        print(f"{r['input']} -> {', '.join(r['outputs'])}  [{r.get('worker')}, {r.get('seconds')} s]")
    else:
        print(f"{r['input']}: {r['status']} ({r.get('reason', '')})")


def main(argv: Optional[List[str]] = None, prog: str = "comfy_client") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Submit images as ComfyUI API prompts to many workers "
                                                        "(Ray Serve endpoint or plain ComfyUI servers).")
    ap.add_argument("inputs", nargs="+", help="image files or folders")
    ap.add_argument("--prompt", required=True, help="API prompt: an examples/api/*.json body or a bare prompt")
    ap.add_argument("-o", "--output", required=True, help="output folder (created)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--serve", metavar="URL", help="the Ray Serve endpoint (restorekit comfy-serve prints it)")
    where.add_argument("--server", metavar="URL", action="append", help="a ComfyUI server (repeat for each)")
    ap.add_argument("--concurrency", type=int, default=0,
                    help="with --serve: requests kept open (default 8; at least the number of replicas)")
    ap.add_argument("--loader", help="node id of the image loader to feed (default: the prompt's only one)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one image may take (default 600)")
    ex = ap.add_mutually_exclusive_group()
    ex.add_argument("--skip-existing", action="store_true", help="skip images whose outputs exist (resume)")
    ex.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = ap.parse_args(argv)
    if args.concurrency < 0 or not 0 < args.timeout < 1e6:
        print(f"{prog}: error: --concurrency must be >= 0 and --timeout in (0, 1e6)", file=sys.stderr)
        return 2
    try:
        report = submit(args.inputs, args.prompt, args.output, servers=args.server or (), serve_url=args.serve,
                        concurrency=args.concurrency, timeout=args.timeout, loader=args.loader,
                        existing="skip" if args.skip_existing else "overwrite" if args.overwrite else "rename",
                        on_row=_print_row)
    except (OSError, ValueError, ServerGone) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    c = report["counts"]
    print(f"processed {c['processed']}, skipped {c['skipped']}, failed {c['failed']} in {report['seconds']} s "
          f"({report['images_per_second']} images/s); per worker: {json.dumps(report['per_worker'])}")
    print(f"report: {report['report']}")
    return 1 if c["failed"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
