"""RestoreKit's Python API: a small, stable surface over the library (also importable from the
package root: ``from restorekit import restore, restore_file, run_node``).

Images are numpy arrays ``[H, W]`` or ``[H, W, C]`` with C = 1 (grey), 3 (RGB) or 4 (RGBA):

* ``uint8`` is read as 0..255, ``uint16`` as 0..65535, float (16/32/64-bit) as 0..1;
* a float array with values outside 0..1 is clipped (the info's ``notes`` say so), and one whose
  maximum is above 2 is refused as mis-scaled 8/16-bit data (``ValueError``);
* results come back in the input's dtype and scale (uint8 in -> uint8 out) and channel count.

========================  =========================================================================
``restore``               hybrid restorer on an array -> ``(array, info)``
``analyse``               damage features, quality estimate (dB) and severity of an array
``restore_file``          one file -> restored file (format, depth, ICC, EXIF kept) -> report row
``restore_folder``        files/folders -> output folder, same rules as ``restorekit restore``
``run_node``              any node of the pack on an array -> its outputs by name
``run_workflow``          an API prompt (examples/api/*.json) in-process on an array or file
``list_nodes``            node id -> display name
``read_image``            a file -> :class:`ImageData` (float32 0..1 pixels + :class:`ImageMeta`)
``write_image``           pixels (+ meta) -> a file, depth/greyscale/metadata kept
``HybridRestorer``        the restorer class (thresholds, device, tile, models) for repeated use
========================  =========================================================================

Nothing here imports torch until a torch path runs (the U-Net, a model node, ``run_node``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from .hybrid.engine import HybridRestorer, Thresholds, shared_restorer
from .scripts.image_io import ImageData, ImageMeta, read_image, write_image
from .scripts import image_io

__all__ = ["HybridRestorer", "Thresholds", "analyse", "restore", "restore_file", "restore_folder", "run_node",
           "run_workflow", "list_nodes", "read_image", "write_image", "ImageData", "ImageMeta"]

def _restorer(device: str = "auto", tile: int = 0, thresholds: Optional[Thresholds] = None) -> HybridRestorer:
    """A cached restorer per (device, tile, thresholds): the shipped models load once."""
    return shared_restorer(thresholds, device, tile)


def restore(image, strategy: str = "auto", *, device: str = "auto", tile: int = 0,
            thresholds: Optional[Thresholds] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Restore one image with the hybrid restorer.

    ``image``: array (see the module docstring for dtypes and ranges) or a file path.
    ``strategy``: ``auto`` (route by damage), ``classical``, ``ml_guided`` or ``deep_learning``.
    ``device``: ``auto`` / ``cpu`` / ``gpu`` for the U-Net; ``tile``: 0 = planned from free memory.
    Returns ``(restored, info)``: the array in the input's dtype and channel count; ``info`` has
    ``method``, ``severity``, ``analysis``, ``parameters``, ``notes`` and ``seconds``.
    """
    return _restorer(device, tile, thresholds).restore(image, strategy)


def analyse(image, *, estimator: Optional[str] = None, device: str = "auto") -> Dict[str, Any]:
    """Damage analysis of one image: the 14 FFT ``features``, ``quality_db`` (estimated PSNR against
    the undamaged original, dB), ``severity`` (light / moderate / severe) and how it was estimated.

    ``estimator``: ``unet`` (default; one U-Net run) or ``forest`` (random forest, ~1 ms)."""
    if isinstance(image, (str, os.PathLike)):
        px = read_image(os.fspath(image)).pixels
    else:
        px, _kind, _notes = image_io.to_float01(image, "analyse")
    if px.ndim == 2:
        px = px[..., None]
    rgb = np.repeat(px, 3, -1) if px.shape[-1] == 1 else px[..., :3]
    return _restorer(device).analyse(np.ascontiguousarray(rgb), estimator)


def _options(output_dir, **kw):
    from .hybrid.tools.batch import BatchOptions

    return BatchOptions(output_dir=os.fspath(output_dir), **kw)


def restore_file(path, output=None, *, strategy: str = "auto", format: Optional[str] = None,
                 bit_depth: Optional[int] = None, quality: int = image_io.DEFAULT_QUALITY,
                 overwrite: bool = False, device: str = "auto", tile: int = 0) -> Dict[str, Any]:
    """Restore one image file and write the result; returns the report row (``status``,
    ``outputs``, ``method``, ``severity``, ``quality_db``, ``notes``, ``seconds``).

    ``output``: ``None`` (beside the input, ``<stem>_restored.<ext>``), a folder (created), or a file
    path whose extension picks the format.  The input's format, bit depth (16-bit in -> 16-bit out),
    greyscale, ICC profile and metadata are kept unless ``format`` / ``bit_depth`` say otherwise.
    An existing output is never replaced unless ``overwrite`` (a numbered name is used instead when
    ``output`` is a folder; ``FileExistsError`` when it is a file path).  Unreadable files and
    processing errors give ``status: failed`` with the ``reason``.
    """
    from .hybrid.tools.batch import RestoreProcessor, Task, plan, process_task

    path = os.fspath(path)
    proc = RestoreProcessor(_restorer(device, tile), strategy)
    existing = "overwrite" if overwrite else "rename"
    if output is not None and image_io.is_image_file(os.fspath(output)) and not os.path.isdir(output):
        target = os.path.abspath(os.fspath(output))
        if os.path.exists(target) and not overwrite:
            raise FileExistsError(f"'{target}' exists; pass overwrite=True to replace it")
        opts = _options(os.path.dirname(target), existing="overwrite" if overwrite else "rename",
                        format=format, bit_depth=bit_depth, quality=quality)
        return process_task(Task(path, "", {"": target}, True), proc, opts)
    out_dir = os.fspath(output) if output is not None else os.path.dirname(os.path.abspath(path))
    opts = _options(out_dir, existing=existing, format=format, bit_depth=bit_depth, quality=quality)
    tasks, skipped = plan([path], opts, proc.outputs)
    if not tasks:
        return skipped[0]
    os.makedirs(out_dir, exist_ok=True)
    return process_task(tasks[0], proc, opts)


def restore_folder(inputs: Union[str, Iterable[str]], output_dir, *, strategy: str = "auto",
                   recursive: bool = False, existing: str = "rename", format: Optional[str] = None,
                   bit_depth: Optional[int] = None, quality: int = image_io.DEFAULT_QUALITY,
                   device: str = "auto", tile: int = 0, progress: bool = False) -> Dict[str, Any]:
    """``restorekit restore`` from Python: every image in ``inputs`` (files and folders) into
    ``output_dir``, with the batch rules of :mod:`hybrid.tools.batch` (``existing``: ``rename`` /
    ``skip`` / ``overwrite``; ``recursive`` mirrors the tree).  Returns the report (``files`` rows,
    ``summary`` counts and reasons, ``report`` path of the JSON written into ``output_dir``)."""
    from .hybrid.tools.batch import RestoreProcessor, run_batch

    opts = _options(output_dir, recursive=recursive, existing=existing, format=format, bit_depth=bit_depth,
                    quality=quality)
    restorer = _restorer(device, tile)
    return run_batch(inputs, RestoreProcessor(restorer, strategy, progress=progress), opts, progress=progress,
                     extra={"strategy": strategy})


def list_nodes() -> Dict[str, str]:
    """Every node of the pack: id -> display name (imports the node modules and torch)."""
    from .hybrid.tools import noderun, workflow

    names = workflow.display_names()
    return {nid: names.get(nid, nid) for nid in sorted(noderun.pack_nodes())}


def _image_data(image) -> Tuple[ImageData, str]:
    if isinstance(image, ImageData):
        return image, "float"
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image)), "float"
    px, kind, notes = image_io.to_float01(image, "image")
    if px.ndim == 2:
        px = px[..., None]
    return ImageData(px, ImageMeta(notes=notes)), kind


def run_node(node: str, image=None, **inputs) -> Dict[str, Any]:
    """Run one node of the pack; returns its outputs by name (``RETURN_NAMES``).

    ``node``: id (``RestoreKitLBCLAHE``), id without ``RestoreKit`` or display name.  ``image``: array
    (dtype rules above), file path or :class:`ImageData`, fed to the node's first IMAGE socket (or
    file input).  ``inputs``: widget values by name (checked against type, range and choices as
    ComfyUI checks them; unset widgets take their declared defaults) and arrays for other IMAGE /
    MASK sockets.  IMAGE outputs come back as arrays ``[H, W, C]`` in the input's dtype, STRING
    outputs as text, other outputs (a PSF, a model) as the node returns them.
    """
    from .hybrid.tools import noderun, workflow

    node_id = noderun.find_node(node)
    cls = noderun.pack_nodes()[node_id]
    specs = {s.name: s for s in workflow.input_specs(cls)}
    values, arrays = {}, {}
    for name, value in inputs.items():
        spec = specs.get(name)
        if spec is not None and not spec.is_widget and isinstance(value, (np.ndarray, list)):
            arrays[name] = value
        else:
            values[name] = value
    proc = noderun.NodeProcessor(node_id, values=values, arrays=arrays)
    data, kind = (None, "float") if image is None else _image_data(image)
    if data is None and proc.needs_files:
        raise ValueError(f"{node_id} needs an image")
    out = proc.last_outputs(data)
    return {k: (image_io.from_float01(v, kind) if isinstance(v, np.ndarray) and kind != "float" else v)
            for k, v in out.items()}


def run_workflow(workflow, image=None, settings: Optional[Dict[str, Any]] = None) -> Dict[str, np.ndarray]:
    """Run an API prompt in-process (no server): ``workflow`` is a path (``examples/api/X.json``, a
    ``POST /prompt`` body, a bare prompt or a UI workflow) or a prompt dict.  ``image`` (array, path
    or :class:`ImageData`) feeds its one image loader; without it the loaders read their own files
    from the current folder.  ``settings``: ``{"NODE_ID.input": value}``.  Returns the images each
    SaveImage node received, by its ``filename_prefix``, as float32 arrays ``[H, W, C]`` (or
    ``[B, H, W, C]``), or in the input array's dtype."""
    from .hybrid.tools import noderun, workflow as wf

    prompt = wf.read_prompt(os.fspath(workflow)) if isinstance(workflow, (str, os.PathLike)) \
        else wf.prompt_from_json(workflow)
    proc = noderun.WorkflowProcessor(prompt, {k: str(v) for k, v in (settings or {}).items()})
    data, kind = (None, "float") if image is None else _image_data(image)
    result = proc(data)
    return {k: (image_io.from_float01(v, kind) if kind != "float" else v) for k, v in result.images.items()}
