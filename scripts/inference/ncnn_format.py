"""Reading ncnn model files (``.param`` text graph + ``.bin`` weights) as plain data.

Nothing here runs code from the files: the ``.param`` is tokenised line by line and the ``.bin`` is
sliced with :func:`numpy.frombuffer` in the order the graph asks for weights.  Layout facts follow the
ncnn sources (Tencent/ncnn, ``src/net.cpp`` ``load_param`` and ``src/modelbin.cpp``):

``.param`` (text)
    line 1 the magic ``7767517``; line 2 ``layer_count blob_count``; then one layer per line:
    ``Type name n_in n_out in_blobs... out_blobs... key=value...``.  A key ``k <= -23300`` holds an
    array ``n,v1,...,vn`` for parameter id ``-k - 23300``.  Values with ``.``/``e`` are floats.

``.bin``
    for each layer in file order, the arrays its type loads.  An array loaded with "type 0" starts
    with a 4-byte tag: ``0x01306B47`` fp16 (padded to 4 bytes), ``0x000D4B38`` int8, ``0x0002C056``
    or ``0`` raw fp32, any other non-zero tag a 256-entry fp32 codebook + uint8 indices.  "Type 1"
    arrays (biases, PReLU slopes, MemoryData) are raw fp32 without a tag.

Every refusal is an :class:`NcnnFormatError` (a :class:`~.files.ModelFileError`) naming the file,
the layer and what was found.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .files import ModelFileError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056
ARRAY_KEY_BASE = -23300

#: layer types that carry no weights in the .bin
WEIGHTLESS = frozenset("""
Input Split Concat Eltwise BinaryOp UnaryOp ReLU Sigmoid Swish TanH Clip PixelShuffle Reorg Interp
Crop Padding Pooling Reshape Permute Flatten Slice Noop Dropout Softmax HardSigmoid HardSwish Mish
ELU GELU SELU Exp Log Power AbsVal Tile Squeeze ExpandDims Reduction Cast Flip Erf
""".split())

#: layer types whose weights this module can read
WEIGHTED = frozenset("""
Convolution ConvolutionDepthWise Deconvolution DeconvolutionDepthWise InnerProduct PReLU MemoryData
BatchNorm Scale Bias InstanceNorm GroupNorm LayerNorm
""".split())


class NcnnFormatError(ModelFileError):
    """A .param/.bin pair that cannot be read; the message names the file and what was found."""


ParamValue = Union[int, float, str, List[Union[int, float]]]


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: List[str]
    outputs: List[str]
    params: Dict[int, ParamValue]
    line: int = 0
    #: arrays read from the .bin, by role ("weight", "bias", "slope", "data", ...), float32
    weights: Dict[str, np.ndarray] = field(default_factory=dict)
    #: storage of the "type 0" arrays: "fp32", "fp16", "codebook"
    storage: str = ""

    def p(self, key: int, default=0):
        return self.params.get(key, default)

    def describe(self) -> str:
        keys = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.type} '{self.name}' (line {self.line}{', ' + keys if keys else ''})"


@dataclass
class NcnnGraph:
    layers: List[NcnnLayer]
    blob_count: int
    source: str = ""
    weights_loaded: bool = False
    storage: str = ""

    def of_type(self, *types: str) -> List[NcnnLayer]:
        return [l for l in self.layers if l.type in types]

    def weighted(self) -> List[NcnnLayer]:
        """Layers that own arrays in the .bin, in file (= .bin) order (by type before the .bin is read)."""
        if self.weights_loaded:
            return [l for l in self.layers if l.weights]
        return [l for l in self.layers if l.type in WEIGHTED and not (l.type == "Scale" and l.p(0) == -233)]

    def type_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for l in self.layers:
            counts[l.type] = counts.get(l.type, 0) + 1
        return counts

    def summary(self) -> str:
        """``Convolution x18, PReLU x17, ...`` in order of first appearance."""
        return ", ".join(f"{t} x{n}" for t, n in self.type_counts().items())

    def producer(self) -> Dict[str, NcnnLayer]:
        return {b: l for l in self.layers for b in l.outputs}

    def input_layers(self) -> List[NcnnLayer]:
        return self.of_type("Input")

    def output_blob(self) -> str:
        """The blob of the last layer (ncnn converters name it 'output')."""
        return self.layers[-1].outputs[-1]


def _name(path: str) -> str:
    return os.path.basename(str(path)) or str(path)


def _number(text: str):
    t = text.strip()
    try:
        if any(c in t for c in ".eE") and not t.lower().startswith(("0x",)):
            return float(t)
        return int(t)
    except ValueError:
        return t


def _parse_value(key: int, raw: str, where: str) -> Tuple[int, ParamValue]:
    if key <= ARRAY_KEY_BASE:
        parts = [p for p in raw.split(",")]
        try:
            n = int(parts[0])
        except ValueError:
            raise NcnnFormatError(f"{where}: array parameter {key}={raw!r} does not start with its length") from None
        values = [_number(p) for p in parts[1:]]
        if len(values) != n or any(isinstance(v, str) for v in values):
            raise NcnnFormatError(f"{where}: array parameter {key} declares {n} values but holds {raw!r}")
        return ARRAY_KEY_BASE - key, values
    return key, _number(raw)


def parse_param_text(text: str, source: str = "model.param") -> NcnnGraph:
    """Parse the text of a ``.param`` file into an :class:`NcnnGraph` (no weights yet)."""
    name = _name(source)
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise NcnnFormatError(f"ncnn param '{name}' is empty")
    first = lines[0][1]
    if first != str(MAGIC):
        raise NcnnFormatError(
            f"ncnn param '{name}' does not start with the magic number {MAGIC} (found {first[:40]!r}); "
            f"is it an ncnn .param file?")
    if len(lines) < 2:
        raise NcnnFormatError(f"ncnn param '{name}' ends after the magic number (no layer/blob count line)")
    counts = lines[1][1].split()
    try:
        layer_count, blob_count = int(counts[0]), int(counts[1])
        if len(counts) != 2 or layer_count <= 0 or blob_count <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise NcnnFormatError(
            f"ncnn param '{name}' line {lines[1][0]}: expected 'layer_count blob_count', found {lines[1][1][:60]!r}"
        ) from None
    body = lines[2:]
    if len(body) != layer_count:
        raise NcnnFormatError(
            f"ncnn param '{name}' declares {layer_count} layers but has {len(body)} layer lines (truncated "
            f"or edited file?)")
    layers: List[NcnnLayer] = []
    produced = set()
    for lineno, ln in body:
        where = f"ncnn param '{name}' line {lineno}"
        tok = ln.split()
        if len(tok) < 4:
            raise NcnnFormatError(f"{where}: expected 'Type name n_in n_out ...', found {ln[:80]!r}")
        ltype, lname = tok[0], tok[1]
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
            if n_in < 0 or n_out < 0:
                raise ValueError
        except ValueError:
            raise NcnnFormatError(f"{where}: layer '{lname}' has non-numeric blob counts {tok[2]!r} {tok[3]!r}") from None
        if len(tok) < 4 + n_in + n_out:
            raise NcnnFormatError(f"{where}: layer '{lname}' declares {n_in} inputs and {n_out} outputs but "
                                  f"lists only {len(tok) - 4} blob names")
        ins = tok[4:4 + n_in]
        outs = tok[4 + n_in:4 + n_in + n_out]
        params: Dict[int, ParamValue] = {}
        for kv in tok[4 + n_in + n_out:]:
            if "=" not in kv:
                raise NcnnFormatError(f"{where}: layer '{lname}' parameter {kv!r} is not key=value")
            k, v = kv.split("=", 1)
            try:
                key = int(k)
            except ValueError:
                raise NcnnFormatError(f"{where}: layer '{lname}' parameter key {k!r} is not an integer") from None
            pk, pv = _parse_value(key, v, f"{where} layer '{lname}'")
            params[pk] = pv
        for b in ins:
            if b not in produced:
                raise NcnnFormatError(f"{where}: layer '{lname}' reads blob '{b}' that no earlier layer produces")
        produced.update(outs)
        layers.append(NcnnLayer(ltype, lname, ins, outs, params, lineno))
    if len(produced) != blob_count:
        # converters are exact here; a mismatch means the file was edited by hand
        raise NcnnFormatError(f"ncnn param '{name}' declares {blob_count} blobs but its layers produce {len(produced)}")
    return NcnnGraph(layers=layers, blob_count=blob_count, source=str(source))


def read_param(path: str) -> NcnnGraph:
    """Read and parse a ``.param`` file; refuses binary ``.param.bin`` files and non-text data."""
    name = _name(path)
    if not os.path.isfile(path):
        raise NcnnFormatError(f"ncnn param '{name}' does not exist ({path})")
    with open(path, "rb") as f:
        data = f.read(8 << 20)
        if f.read(1):
            raise NcnnFormatError(f"ncnn param '{name}' is larger than 8 MB: not an ncnn text graph")
    if data[:4] == MAGIC.to_bytes(4, "little"):
        raise NcnnFormatError(
            f"ncnn param '{name}' is a binary .param (.param.bin, magic {MAGIC} as int32); only the text "
            f".param format is supported: export the text graph with ncnn's tools (ncnn2mem writes the binary "
            f"one) or use the .param the model was published with")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NcnnFormatError(f"ncnn param '{name}' is not text (not UTF-8); expected an ncnn .param graph") from None
    return parse_param_text(text, source=path)


# --- .bin ---------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data = data
        self.pos = 0
        self.source = source

    def _take(self, nbytes: int, what: str, layer: NcnnLayer) -> memoryview:
        if self.pos + nbytes > len(self.data):
            raise NcnnFormatError(
                f"ncnn bin '{_name(self.source)}' is truncated: {layer.describe()} needs {nbytes} bytes for its "
                f"{what} at offset {self.pos}, but the file has {len(self.data)} bytes")
        view = memoryview(self.data)[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return view

    def raw(self, count: int, what: str, layer: NcnnLayer) -> np.ndarray:
        """A "type 1" array: ``count`` raw little-endian fp32 values."""
        return np.frombuffer(self._take(4 * count, what, layer), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str, layer: NcnnLayer) -> Tuple[np.ndarray, str]:
        """A "type 0" array: a 4-byte tag, then fp16 / fp32 / codebook data."""
        head = bytes(self._take(4, f"{what} storage tag", layer))
        tag = int.from_bytes(head, "little")
        if tag == TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4
            arr = np.frombuffer(self._take(nbytes, what + " (fp16)", layer), dtype="<f2")[:count]
            return arr.astype(np.float32), "fp16"
        if tag == TAG_INT8:
            raise NcnnFormatError(
                f"ncnn bin '{_name(self.source)}': {layer.describe()} stores its {what} as int8 (quantised "
                f"model); int8 ncnn models cannot be converted to float weights faithfully")
        if tag == TAG_FP32_SCALED or tag == 0:
            return self.raw(count, what, layer), "fp32"
        if head[0] == 0 and sum(head) != 0:
            raise NcnnFormatError(
                f"ncnn bin '{_name(self.source)}': {layer.describe()} has an unknown storage tag 0x{tag:08X} "
                f"before its {what}; the .bin does not match this .param or is corrupt")
        table = np.frombuffer(self._take(256 * 4, what + " codebook", layer), dtype="<f4")
        idx = np.frombuffer(self._take((count + 3) // 4 * 4, what + " codebook indices", layer), dtype=np.uint8)[:count]
        return table[idx].astype(np.float32), "codebook"


def _count(value, layer: NcnnLayer, what: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise NcnnFormatError(f"{layer.describe()}: {what} must be a non-negative integer, found {value!r}")
    return value


def _load_layer(r: _Reader, l: NcnnLayer) -> None:
    t = l.type
    storage = ""
    if t in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise", "InnerProduct"):
        size_key, bias_key = (2, 1) if t == "InnerProduct" else (6, 5)
        if l.p(8, 0):
            raise NcnnFormatError(f"{l.describe()} is int8-quantised (int8_scale_term set); only float models "
                                  f"can be converted")
        if t != "InnerProduct" and l.p(19, 0):
            raise NcnnFormatError(f"{l.describe()} takes its weights from another blob (dynamic weight); not supported")
        n = _count(l.p(size_key, 0), l, "weight_data_size")
        l.weights["weight"], storage = r.tagged(n, "weights", l)
        if l.p(bias_key, 0):
            l.weights["bias"] = r.raw(_count(l.p(0, 0), l, "num_output"), "bias", l)
    elif t == "PReLU":
        l.weights["slope"] = r.raw(max(1, _count(l.p(0, 0), l, "num_slope")), "slopes", l)
    elif t == "MemoryData":
        dims = [l.p(0, 0), l.p(1, 0), l.p(11, 0), l.p(2, 0)]
        n = 1
        for d in dims:
            n *= max(1, _count(d, l, "dimension"))
        l.weights["data"] = r.raw(n, "data", l)
    elif t == "BatchNorm":
        c = _count(l.p(0, 0), l, "channels")
        for role in ("slope", "mean", "var", "bias"):
            l.weights[role] = r.raw(c, role, l)
    elif t == "Scale":
        n = l.p(0, 0)
        if n != -233:
            l.weights["scale"] = r.raw(_count(n, l, "scale_data_size"), "scale", l)
            if l.p(1, 0):
                l.weights["bias"] = r.raw(n, "bias", l)
    elif t == "Bias":
        l.weights["bias"] = r.raw(_count(l.p(0, 0), l, "bias_data_size"), "bias", l)
    elif t in ("InstanceNorm", "LayerNorm"):
        n, affine = (l.p(0, 0), l.p(2, 1))
        if affine:
            l.weights["gamma"] = r.raw(_count(n, l, "affine size"), "gamma", l)
            l.weights["beta"] = r.raw(n, "beta", l)
    elif t == "GroupNorm":
        if l.p(3, 1):
            c = _count(l.p(1, 0), l, "channels")
            l.weights["gamma"] = r.raw(c, "gamma", l)
            l.weights["beta"] = r.raw(c, "beta", l)
    elif t in WEIGHTLESS:
        return
    else:
        raise NcnnFormatError(
            f"{l.describe()}: layer type '{t}' is unknown to the importer, so it cannot tell how many weights "
            f"this layer has in the .bin")
    l.storage = storage


def load_weights(graph: NcnnGraph, bin_path: str) -> NcnnGraph:
    """Read ``bin_path`` into the layers of ``graph`` (in place; returns it).

    Refuses a missing or empty file, a file shorter than the graph needs (naming the layer where it
    ran out) and one with bytes left over (it belongs to another graph).
    """
    name = _name(bin_path)
    if not os.path.isfile(bin_path):
        raise NcnnFormatError(f"ncnn bin '{name}' does not exist ({bin_path}); a .param needs its .bin beside it")
    with open(bin_path, "rb") as f:
        data = f.read()
    if not data:
        raise NcnnFormatError(f"ncnn bin '{name}' is empty (0 bytes): the weights were never downloaded or were lost")
    r = _Reader(data, bin_path)
    for l in graph.layers:
        l.weights = {}
        _load_layer(r, l)
    if r.pos != len(data):
        raise NcnnFormatError(
            f"ncnn bin '{name}' has {len(data) - r.pos} bytes more than its graph '{_name(graph.source)}' reads "
            f"({r.pos} of {len(data)}): the .bin belongs to another .param")
    storages = sorted({l.storage for l in graph.layers if l.storage})
    graph.storage = "+".join(storages) or "fp32"
    graph.weights_loaded = True
    return graph


def read_model(param_path: str, bin_path: Optional[str] = None) -> NcnnGraph:
    """Parse ``param_path`` and read its weights (``bin_path`` defaults to the same name with ``.bin``)."""
    graph = read_param(param_path)
    return load_weights(graph, bin_path or bin_path_for(param_path))


def bin_path_for(param_path: str) -> str:
    base = str(param_path)
    if base.endswith(".param"):
        base = base[: -len(".param")]
    return base + ".bin"


# --- writing (used by tests and tools that make small graphs) --------------------------------------
def format_layer(ltype: str, name: str, inputs: List[str], outputs: List[str], params: Dict[int, ParamValue]) -> str:
    def fmt(v):
        return f"{v:e}" if isinstance(v, float) else str(v)

    items = []
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            items.append(f"{ARRAY_KEY_BASE - k}={len(v)}," + ",".join(fmt(x) for x in v))
        else:
            items.append(f"{k}={fmt(v)}")
    return " ".join([ltype, name, str(len(inputs)), str(len(outputs))] + list(inputs) + list(outputs) + items)


def encode_array(values: np.ndarray, storage: str = "fp32", tagged: bool = True) -> bytes:
    """The bytes ncnn expects for one array: tag + data ("type 0") or raw fp32 ("type 1")."""
    v = np.asarray(values, dtype=np.float32).ravel()
    if not tagged:
        return v.astype("<f4").tobytes()
    if storage == "fp16":
        raw = v.astype("<f2").tobytes()
        raw += b"\0" * ((-len(raw)) % 4)
        return TAG_FP16.to_bytes(4, "little") + raw
    if storage == "fp32":
        return b"\0\0\0\0" + v.astype("<f4").tobytes()
    raise ValueError(f"storage must be 'fp32' or 'fp16', got {storage!r}")
