"""A sentence-transformers model's transformer on ONNX Runtime, for queries and passages.

A customer's question is a dozen tokens. torch spends most of such a pass on per-operator
overhead, so ONNX Runtime runs the same network about twice as fast on one CPU thread (all-MiniLM-
L6-v2: ~15 -> ~7.5 ms; ``benchmarks/RESULTS.md``) and gives the same vectors (float32, the same
weights; checked at load). Passages (ingest, the backlog) run on it too, in passes of similar
lengths side by side (:meth:`OnnxQueries.encode`): 1.3-1.8x faster than torch's batches on 2
cores (ingest end to end 1.3x), at about half the memory, with torch's vectors within 1e-6
(:meth:`kb.encoder.SentenceEncoder.encode`).

The graph is exported once from the model's own weights (nothing is downloaded) into a cache folder
(``<kb.index_dir>/onnx``) under a name derived from the model's files and the library versions, so
a changed model or upgrade exports afresh. Any failure (``onnxruntime`` or ``onnx`` missing, a model
whose pipeline is not transformer -> mean or CLS pooling -> normalise, an export error, vectors that
differ from torch's) leaves the model on torch, with the reason logged.

Beside the graph goes a manifest (``*.quick.json``): the pooling, the inputs, the max length, the
dimension and prompts, and torch's vectors of a few probe texts. The next start reads it and runs
queries with the model's own ``tokenizer.json`` (the ``tokenizers`` library) without importing
torch and sentence-transformers at all, about 5 s of a start on 2 cores
(:meth:`OnnxQueries.quick`), after checking that the probes still give torch's vectors; such a
start never loads torch, passages included. The manifest is named after the model's files and the
versions of torch, sentence-transformers and ONNX Runtime, so any change falls back to torch.

**int8 queries** (``kb.int8_queries``, on by default). Beside the graph goes a copy whose MatMul
weights are quantized to int8 per channel and its embedding tables (the Gathers) per table (ONNX
Runtime's dynamic quantization, ~2 s once; the tables, 47 MB float32 in all-MiniLM-L6-v2 and 94
MB in all-mpnet-base-v2, are a quarter of that, at the same cosine to torch's vectors). A
query runs on it in ~1.4 ms instead of ~3 ms; its vectors are within a cosine of ~0.99 of
torch's, and retrieval measured the same (stackfaq Recall@1 0.957 -> 0.956, covid MRR@10 0.710
-> 0.707; ``benchmarks/RESULTS.md``). Passages, which go into the index, always run in float32.
The copy is used only when the probes' vectors stay within :data:`INT8_MIN_COSINE` of torch's;
otherwise (or when it cannot be made) queries run on the float32 graph, with the reason logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kb.files import one_maker, replace_atomically

log = logging.getLogger(__name__)

# Texts whose vectors must match torch's before the graph is used: short, long, one word.
PROBES = (
    "How do I reset my password?",
    "a",
    " ".join(["Customers sometimes write long messages that explain their whole situation"] * 12),
)
# ...and, for a start without torch, texts that also exercise casing, accents, other scripts,
# truncation at the max length and padding in a batch.
QUICK_PROBES = (
    *PROBES,
    "Où est ma FACTURE? Café Zürich, 你好, Ελληνικά, Привет!",
    " ".join(["A customer's long story, longer than the model reads at once"] * 60),
)
CHUNK = 16  # texts per ONNX Runtime pass in a long call
TOLERANCE = 1e-4  # largest difference allowed in any coordinate of a normalised vector
INT8_MIN_COSINE = 0.98  # int8 queries: each probe's cosine to torch's vector (measured >= 0.99)
INT8_SUFFIX = ".int8e.onnx"  # the int8 copy of ``<graph>.onnx`` ("e": its embedding tables too)
# The int8 copies tried, in order, with their file suffixes (see OnnxQueries.use_int8).
INT8_PLANS = {
    "all": INT8_SUFFIX,
    "smooth": ".int8e-smooth.onnx",
    "late": ".int8e-late.onnx",
    "ffn-out": ".int8e-ffn.onnx",
}
# "smooth": how much of each MatMul input channel's range moves into the weights (SmoothQuant's
# alpha). all-mpnet-base-v2, 11 texts' worst / mean cosine to float32: 0.5 -> 0.902 / 0.940,
# 0.6 -> 0.977 / 0.989, 0.7 -> 0.983 / 0.993, 0.8 -> 0.978 / 0.989, 0.9 -> 0.971 / 0.983.
SMOOTH_ALPHA = 0.7
_EXPORTING = threading.Lock()  # see _export
_FFN_OUTPUT = re.compile(r"layer\.(\d+)/output/dense/MatMul")


Tokenize = Callable[[Sequence[str]], dict[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a start without torch needs of a model exported before (see the module's docstring)."""

    graph: str  # the graph's file name in the cache folder
    pooling: str
    inputs: tuple[str, ...]
    max_seq_length: int
    do_lower_case: bool
    dim: int
    prefixes: dict[str, str]
    probes: list[list[float]]  # torch's vectors of QUICK_PROBES


class OnnxQueries:
    """A sentence-transformers model's transformer as an ONNX Runtime session, with the model's
    own tokenisation and pooling; ``encode`` returns L2-normalised float32 rows."""

    def __init__(
        self,
        session: Any | None,
        tokenize: Tokenize,
        inputs: tuple[str, ...],
        pooling: str,
        graph: Path | None = None,
    ) -> None:
        """``session``: the float32 graph's; None: loaded from ``graph`` when first needed."""
        self._float_session = session
        self._graph = graph
        self._loading = threading.Lock()
        self._tokenizing = threading.Lock()
        self._query_session = session  # the int8 copy when one is in use (:meth:`use_int8`)
        self.int8 = False
        self._tokenize = tokenize  # the model's own max length and casing
        self._inputs = inputs
        self._pooling = pooling
        self._pool: ThreadPoolExecutor | None = None  # for long calls, made at the first

    @classmethod
    def build(
        cls,
        model: Any,
        cache: Path,
        model_id: str,
        *,
        prefixes: dict[str, str] | None = None,
        int8: bool = False,
    ) -> OnnxQueries | None:
        """The model on ONNX Runtime, or None (logged) when it cannot be had exactly. Writes
        the manifest a start without torch reads (``prefixes``: the encoder's query/passage
        prompts, recorded in it). ``int8``: queries on the int8 copy where it passes the probes
        (see the module)."""
        try:
            pooling = _pooling(model)
            if pooling is None:
                log.info(
                    "onnx: %s keeps torch (a pipeline other than transformer, pooling, normalise)", model_id
                )
                return None
            import onnxruntime

            inputs = tuple(k for k in _tokenize(model, [PROBES[0]]) if k in _INPUT_NAMES)
            path = cache / f"{_slug(model_id)}-{_fingerprint(model, inputs)}.onnx"
            session = _open(onnxruntime, path, lambda: _export(model, inputs, path), "exporting")
            made = cls(session, _torch_tokenize(model), inputs, pooling)
            difference = made.difference_from_torch(model)
        except Exception as exc:
            log.warning("onnx: %s keeps torch: %s: %s", model_id, type(exc).__name__, exc)
            return None
        if difference > TOLERANCE:
            log.warning("onnx: %s keeps torch: vectors differ from torch's by %.2g", model_id, difference)
            return None
        probes = model.encode(list(QUICK_PROBES), normalize_embeddings=True, show_progress_bar=False)
        if int8 and made.use_int8(path, probes, model_id):
            made._graph, made._float_session = path, None  # loaded again when passages come
        try:
            _write_manifest(model, path, model_id, inputs, pooling, prefixes or {}, probes)
        except Exception as exc:  # the next start loads torch as this one did
            log.warning("onnx: no manifest for a start without torch: %s: %s", type(exc).__name__, exc)
        log.info(
            "onnx: %s queries on ONNX Runtime (%s%s; float32 vectors within %.1g of torch's)",
            model_id,
            path,
            ", int8 queries" if made.int8 else "",
            difference,
        )
        return made

    @classmethod
    def quick(
        cls, location: Path, cache: Path, model_id: str, *, int8: bool = False
    ) -> tuple[OnnxQueries, Manifest] | None:
        """The model of folder ``location`` on ONNX Runtime without torch, from the manifest an
        earlier :meth:`build` wrote; None (logged when something is wrong, silent when there is
        no manifest yet) sends the caller to torch. ``int8``: as in :meth:`build`."""
        try:
            manifest_file = cache / _manifest_name(location, model_id)
            if not manifest_file.is_file():
                return None
            manifest = _read_manifest(manifest_file)
            tokenizer_file = location / "tokenizer.json"
            if not tokenizer_file.is_file() or manifest.pooling not in ("mean", "cls"):
                return None
            import onnxruntime
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            tokenizer.enable_truncation(max_length=manifest.max_seq_length)
            tokenizer.enable_padding()  # to the longest text of a batch, with the model's pad token
            graph = cache / manifest.graph
            tokenize = _fast_tokenize(tokenizer, manifest.do_lower_case)
            expected = np.asarray(manifest.probes, dtype=np.float32)
            if int8:  # queries on the int8 copy: the float32 graph waits for passages
                lazy = cls(None, tokenize, manifest.inputs, manifest.pooling, graph=graph)
                if lazy.use_int8(graph, expected, model_id):
                    log.info("onnx: %s queries on int8 from %s, torch not loaded", model_id, manifest.graph)
                    return lazy, manifest
            made = cls(_load_session(onnxruntime, graph), tokenize, manifest.inputs, manifest.pooling)
            alone = np.vstack([made.encode([text]) for text in QUICK_PROBES])
            together = made.encode(list(QUICK_PROBES))  # padded to the longest
            difference = float(max(np.abs(alone - expected).max(), np.abs(together - expected).max()))
        except Exception as exc:
            log.warning("onnx: %s: no start without torch: %s: %s", model_id, type(exc).__name__, exc)
            return None
        if difference > TOLERANCE:
            log.warning(
                "onnx: %s: no start without torch: vectors differ from torch's by %.2g", model_id, difference
            )
            return None
        log.info("onnx: %s queries on ONNX Runtime from %s, torch not loaded", model_id, manifest.graph)
        return made, manifest

    @property
    def _session(self) -> Any:
        """The float32 graph's session. After a start on the int8 copy it is loaded only when
        passages come to be embedded: for all-mpnet-base-v2 that is ~440 MB a bot answering
        questions never holds."""
        if self._float_session is None:
            with self._loading:
                if self._float_session is None:
                    import onnxruntime

                    assert self._graph is not None
                    self._float_session = _load_session(onnxruntime, self._graph)
        return self._float_session

    def use_int8(self, graph: Path, expected: np.ndarray, model_id: str) -> bool:
        """Run queries on an int8 copy of ``graph`` (:func:`pick_int8`) when one keeps torch's
        vectors of :data:`QUICK_PROBES` (``expected``); otherwise stay on float32. Passages
        always run on float32."""
        feeds = [self._feeds([text]) for text in QUICK_PROBES]
        session = pick_int8(
            graph, lambda s: np.vstack([self._run(one, s) for one in feeds]), expected, model_id
        )
        if session is None:
            return False
        self._query_session, self.int8 = session, True
        return True

    def encode(self, texts: Sequence[str], *, workers: int = 1, query: bool = False) -> np.ndarray:
        """Rows for ``texts``. Many (a batch of customers' questions) run in chunks of similar
        lengths (less padding), on up to ``workers`` threads side by side: the session runs one
        pass on one thread, and a pass releases the GIL. ``query``: customers' questions, on the
        int8 copy when one is in use, one pass per question (the copy quantizes each pass's
        activations over the whole pass, so in company a question would get another vector);
        passages (the index's vectors) always on float32."""
        alone = query and self.int8
        session = self._query_session if alone else self._session
        side_by_side = workers > 1 and len(texts) > CHUNK
        if alone:  # one pass per question
            chunks = [[i] for i in range(len(texts))]
        elif len(texts) <= CHUNK:
            return self._run(self._feeds(texts), session)
        else:  # one pass of all would pad every text to the longest (7x slower on 120 passages)
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            chunks = [order[start : start + CHUNK] for start in range(0, len(order), CHUNK)]
        feeds = [self._feeds([texts[i] for i in chunk]) for chunk in chunks]
        if not side_by_side:
            parts = [self._run(one, session) for one in feeds]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="onnx")
            parts = list(self._pool.map(lambda one: self._run(one, session), feeds))
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for chunk, rows in zip(chunks, parts, strict=True):
            out[chunk] = rows
        return out

    def _feeds(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # In the caller's thread, one caller at a time: passages (outside the encoder's lock) and
        # a query may tokenize at once, and a transformers tokenizer sets its padding and
        # truncation on the shared Rust tokenizer per call. Milliseconds, not a pass.
        with self._tokenizing:
            features = self._tokenize(texts)
        return {name: features[name].astype(np.int64) for name in self._inputs}

    def _run(self, feeds: dict[str, np.ndarray], session: Any) -> np.ndarray:
        (hidden,) = session.run(None, feeds)
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.ascontiguousarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)

    def difference_from_torch(self, model: Any) -> float:
        expected = model.encode(list(PROBES), normalize_embeddings=True, show_progress_bar=False)
        got = np.vstack([self.encode([text]) for text in PROBES])
        return float(np.abs(got - expected).max())


_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _tokenize(model: Any, texts: Sequence[str]) -> dict[str, Any]:
    """The model's own tokenisation (its max length, casing): ``preprocess`` since
    sentence-transformers 6, ``tokenize`` before."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    return preprocess(list(texts))


def _torch_tokenize(model: Any) -> Tokenize:
    def tokenize(texts: Sequence[str]) -> dict[str, np.ndarray]:
        features = _tokenize(model, texts)
        return {name: features[name].numpy() for name in _INPUT_NAMES if name in features}

    return tokenize


def _fast_tokenize(tokenizer: Any, lower: bool) -> Tokenize:
    """``tokenizers`` with the model's ``tokenizer.json``: what sentence-transformers' fast
    tokenizer does (the probes check it gives the same vectors)."""

    def tokenize(texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch([text.lower() if lower else text for text in texts])
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    return tokenize


def pick_int8(
    graph: Path, vectors: Callable[[Any], np.ndarray], expected: np.ndarray, model_id: str
) -> Any | None:
    """The session of the first int8 copy of ``graph`` (made once, beside it) whose
    ``vectors(session)`` of the probes are each within :data:`INT8_MIN_COSINE` of ``expected``;
    None when no copy is (logged).

    The copies are tried in the order of :data:`INT8_PLANS`: every MatMul quantized; then every
    MatMul quantized after its input's outlier channels were smoothed into its weights
    (:func:`_smooth`); then the feed-forward output MatMuls of the later layers kept float32,
    then those of every layer (their inputs carry the outliers dynamic quantization handles
    worst: in all-mpnet-base-v2, quantizing every MatMul left a cosine of 0.86, smoothing first
    0.98, keeping the later half's float32 0.98 at twice the time). A copy that misses is deleted
    and a ``.refused`` note is left, so later starts skip it; the copies of later plans an
    accepted one leaves behind (an earlier version's choice) are deleted. A plan that fails
    (logged) gives way to the next, and is tried again at the next start. An accepted copy gets
    a note of its cosine (``.accepted``: with the copy's size and time, the probe vectors and
    ONNX Runtime's version); a later start that finds them all unchanged takes the copy without
    running the probes through it."""
    try:
        import onnxruntime

        expected = np.asarray(expected, dtype=np.float32)
        cosine = 0.0
        copies = {
            plan: graph.with_name(graph.name.removesuffix(".onnx") + suffix)
            for plan, suffix in INT8_PLANS.items()
        }
        for position, (plan, copy) in enumerate(copies.items()):
            refused = copy.with_name(copy.name + ".refused")
            if refused.exists():
                cosine = max(cosine, float(refused.read_text() or 0))
                continue
            try:
                session = _open(
                    onnxruntime, copy, lambda c=copy, p=plan: _quantize(graph, c, p, vectors), "quantizing"
                )
                state = _copy_state(copy, expected, onnxruntime.__version__)
                vouched = _vouched(copy, state)
                if vouched is None:
                    reached = float((vectors(session) * expected).sum(axis=1).min())
                else:
                    reached = vouched
            except Exception as exc:  # this plan only (a graph the smoothing cannot read...): no note
                log.warning(
                    "onnx: %s: int8 copy %s failed (%s: %s); next plan",
                    model_id,
                    copy.name,
                    type(exc).__name__,
                    exc,
                )
                _forget(copy)
                continue
            if reached >= INT8_MIN_COSINE:
                if vouched is None:
                    _vouch(copy, state, reached)
                log.info(
                    "onnx: %s: queries on int8 (%s; cosine >= %.3f%s)",
                    model_id,
                    copy.name,
                    reached,
                    "" if vouched is None else ", as measured at an earlier start",
                )
                for later in list(copies.values())[position + 1 :]:
                    _forget(later)
                return session
            log.info("onnx: %s: int8 copy %s: cosine only %.3f; next plan", model_id, copy.name, reached)
            cosine = max(cosine, reached)
            del session
            _forget(copy)
            replace_atomically(refused, lambda temporary, r=reached: temporary.write_text(f"{r:.4f}"))
    except Exception as exc:
        log.warning("onnx: %s: queries stay on float32: %s: %s", model_id, type(exc).__name__, exc)
        return None
    log.warning("onnx: %s: queries stay on float32: int8 vectors reach only cosine %.3f", model_id, cosine)
    return None


def _acceptance(copy: Path) -> Path:
    return copy.with_name(copy.name + ".accepted")


def _copy_state(copy: Path, expected: np.ndarray, runtime: str) -> str:
    """What a copy's measured cosine holds for: this file as it is (size, time written), these
    probe vectors (the float32 graph's), this ONNX Runtime (its int8 kernels)."""
    stat = copy.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:{runtime}:".encode())
    digest.update(np.ascontiguousarray(expected, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _vouched(copy: Path, state: str) -> float | None:
    """The cosine an earlier start measured for ``copy`` in the same ``state``
    (:func:`_copy_state`): a start then spares the probes' passes through the copy (for the
    defaults' three models, about half of opening them). None: measure."""
    try:
        note = json.loads(_acceptance(copy).read_text())
        if note["fingerprint"] == state:
            return float(note["cosine"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _vouch(copy: Path, state: str, cosine: float) -> None:
    note = json.dumps({"cosine": round(cosine, 4), "fingerprint": state})
    try:
        replace_atomically(_acceptance(copy), lambda temporary: temporary.write_text(note))
    except OSError as exc:  # a read-only cache: the next start measures again
        log.info("onnx: could not note %s as accepted: %s", copy.name, exc)


def _forget(copy: Path) -> None:
    """Delete an int8 copy and its acceptance note."""
    copy.unlink(missing_ok=True)
    _acceptance(copy).unlink(missing_ok=True)


def _load_session(onnxruntime: Any, graph: Path | bytes) -> Any:
    """A session of the graph in file ``graph``, or serialized in it."""
    source = graph if isinstance(graph, bytes) else str(graph)
    return onnxruntime.InferenceSession(
        source, _session_options(onnxruntime), providers=["CPUExecutionProvider"]
    )


def _open(onnxruntime: Any, path: Path, make: Callable[[], None], making: str) -> Any:
    """A session of the graph at ``path``, made by ``make`` first when missing or damaged; by
    one process at a time (replicas starting together on a shared folder export once)."""
    if path.exists():
        try:
            return _load_session(onnxruntime, path)
        except Exception as exc:
            log.warning("onnx: %s is unreadable (%s); %s it again", path, exc, making)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with one_maker(path):
        if not path.exists():  # another process may have made it while this one waited
            make()
    return _load_session(onnxruntime, path)


class _QuietQuantizer(logging.Filter):
    """Drops the quantizer's advice to pre-process the graph (a shape inference pass that gains
    nothing for a transformer's MatMuls), which it logs on the root logger each time."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and record.levelno < logging.WARNING:
            return False  # its notes on each tensor it leaves alone
        return "pre-processing before quantization" not in str(record.msg)


def _kept_float(graph: Path, plan: str) -> list[str]:
    """The MatMul nodes a plan of :data:`INT8_PLANS` keeps float32: the feed-forward output
    projections (``.../layer.N/output/dense/MatMul`` in a transformers export), of the later
    half of the layers (``"late"``) or of all (``"ffn-out"``); none for ``"all"`` and ``"smooth"``."""
    if plan in ("all", "smooth"):
        return []
    import onnx

    nodes = onnx.load(str(graph), load_external_data=False).graph.node
    outputs = {}
    for name in (n.name for n in nodes if n.op_type == "MatMul"):
        found = _FFN_OUTPUT.search(name)
        if found:
            outputs[name] = int(found.group(1))
    if plan == "ffn-out" or not outputs:
        return list(outputs)
    layers = max(outputs.values()) + 1
    return [name for name, layer in outputs.items() if layer >= layers // 2]


def _quantize(graph: Path, copy: Path, plan: str, vectors: Callable[[Any], np.ndarray]) -> None:
    """``graph`` with its MatMul weights quantized to int8 per channel, but for those ``plan``
    keeps float32 (:func:`_kept_float`), and its embedding tables (Gather) to int8, written to
    ``copy`` (atomically: replicas starting together never load half a file). ``"smooth"``
    smooths the graph first (:func:`_smooth`), calibrated on what ``vectors`` runs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = _kept_float(graph, plan)
    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)

    def write(temporary: Path) -> None:
        source = graph
        if plan == "smooth":
            source = temporary.with_name(temporary.name + ".smoothed.onnx")
            _smooth(graph, source, vectors)
        try:
            quantize_dynamic(
                str(source),
                str(temporary),
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gather"],
                nodes_to_exclude=kept,
            )
        finally:
            if source != graph:
                source.unlink(missing_ok=True)

    try:
        replace_atomically(copy, write)
    finally:
        logging.getLogger().removeFilter(quiet)


def _smooth(graph: Path, target: Path, vectors: Callable[[Any], np.ndarray]) -> None:
    """``graph`` computing the same function with its MatMuls' inputs easier to quantize,
    written to ``target`` (SmoothQuant). A transformer's activations carry a few channels tens
    of times larger than the rest; dynamic quantization gives a whole input one scale, so those
    channels crush the others to a few levels. Each channel ``j`` of an input that MatMuls
    multiply by constant weights is divided by ``s_j`` (a ``Mul`` before them) and the weights'
    row ``j`` multiplied by it, with ``s_j = peak_x_j ** a / peak_w_j ** (1 - a)`` (``a``:
    :data:`SMOOTH_ALPHA`; ``peak_x``: the channel's largest magnitude while ``vectors`` runs
    the float32 graph, the probes; ``peak_w``: the row's)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(graph))
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    groups: dict[str, list[Any]] = {}  # input -> the MatMuls that multiply it by constant weights
    for node in model.graph.node:
        matrix = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if matrix is not None and len(matrix.dims) == 2 and uses[matrix.name] == 1:  # not shared
            groups.setdefault(node.input[0], []).append(node)
    outputs = len(model.graph.output)
    for name in groups:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    import onnxruntime

    calibrating = _Peaks(_load_session(onnxruntime, model.SerializeToString()), list(groups), outputs)
    vectors(calibrating)
    peaks = calibrating.peaks
    del calibrating, model.graph.output[outputs:]  # the session: as big as the graph
    ordered = []
    for node in model.graph.node:  # each input's Mul goes just before the first MatMul reading it
        nodes = groups.pop(node.input[0], None) if node.op_type == "MatMul" else None
        if nodes:
            name = node.input[0]
            matrices = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
            rows = np.max([np.abs(m).max(axis=1) for m in matrices], axis=0)
            alpha = SMOOTH_ALPHA
            scale = np.maximum(peaks[name], 1e-5) ** alpha / np.maximum(rows, 1e-5) ** (1 - alpha)
            scale = np.clip(scale, 1e-3, 1e3).astype(np.float32)
            for n, matrix in zip(nodes, matrices, strict=True):
                weights[n.input[1]].CopyFrom(numpy_helper.from_array(matrix * scale[:, None], n.input[1]))
                n.input[0] = f"{name}/smoothed"
            model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}/smoothing"))
            ordered.append(
                helper.make_node(
                    "Mul", [name, f"{name}/smoothing"], [f"{name}/smoothed"], name=f"{name}/Smooth"
                )
            )
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save_model(model, str(target))


class _Peaks:
    """A session for ``vectors`` (:func:`_smooth`): runs a graph whose extra outputs are the
    inputs to smooth, keeps each one's largest magnitude per channel, and answers with the
    graph's own ``outputs``."""

    def __init__(self, session: Any, names: list[str], outputs: int) -> None:
        self._session, self._names, self._outputs = session, names, outputs
        self.peaks: dict[str, np.ndarray] = {}

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        got = self._session.run(None, feeds)
        for name, value in zip(self._names, got[self._outputs :], strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            self.peaks[name] = np.maximum(self.peaks[name], peak) if name in self.peaks else peak
        return got[: self._outputs]


def _session_options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one pass, one thread (see SentenceEncoder._encode_alone);
    # long calls run passes side by side instead (OnnxQueries.encode)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _files(folder: Path) -> list[str]:
    """Each file of a model folder with its size and modification time."""
    parts = []
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return parts


def _manifest_name(location: Path, model_id: str) -> str:
    """Changes with the model's files and the versions of the libraries that made the vectors."""
    versions = [
        _version(p) for p in ("torch", "sentence-transformers", "transformers", "onnxruntime", "tokenizers")
    ]
    parts = [model_id, str(location.resolve()), *versions, *_files(location)]
    return f"{_slug(model_id)}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}.quick.json"


def _write_manifest(
    model: Any,
    graph: Path,
    model_id: str,
    inputs: tuple[str, ...],
    pooling: str,
    prefixes: dict[str, str],
    probes: np.ndarray,
) -> None:
    """``probes``: torch's vectors of :data:`QUICK_PROBES`."""
    folder = Path(str(getattr(model[0].auto_model.config, "name_or_path", "") or "."))
    if not folder.is_dir() or not (folder / "tokenizer.json").is_file():
        return  # a model without a folder of its own (or a slow tokenizer): starts with torch
    transformer = model[0]
    manifest = {
        "graph": graph.name,
        "pooling": pooling,
        "inputs": list(inputs),
        "max_seq_length": int(model.max_seq_length),
        "do_lower_case": bool(getattr(transformer, "do_lower_case", False)),
        "dim": int(probes.shape[1]),
        "prefixes": prefixes,
        "probes": probes.astype(float).tolist(),
    }
    path = graph.parent / _manifest_name(folder, model_id)
    replace_atomically(path, lambda temporary: temporary.write_text(json.dumps(manifest), encoding="utf-8"))


def _read_manifest(path: Path) -> Manifest:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Manifest(
        graph=str(raw["graph"]),
        pooling=str(raw["pooling"]),
        inputs=tuple(str(name) for name in raw["inputs"]),
        max_seq_length=int(raw["max_seq_length"]),
        do_lower_case=bool(raw["do_lower_case"]),
        dim=int(raw["dim"]),
        prefixes={str(k): str(v) for k, v in raw["prefixes"].items()},
        probes=[[float(x) for x in row] for row in raw["probes"]],
    )


def _pooling(model: Any) -> str | None:
    """ "mean" or "cls" when the pipeline is transformer -> that pooling (-> normalise), else None."""
    from sentence_transformers.models import Normalize, Pooling, Transformer

    modules = list(model)
    if (
        len(modules) not in (2, 3)
        or not isinstance(modules[0], Transformer)
        or not isinstance(modules[1], Pooling)
    ):
        return None
    if len(modules) == 3 and not isinstance(modules[2], Normalize):
        return None
    pooling = modules[1]
    if getattr(pooling, "include_prompt", True) is False:  # a prompt left out of the mean
        return None
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers >= 5; before: a method
    if not isinstance(mode, str):
        mode = pooling.get_pooling_mode_str()
    return mode if mode in ("mean", "cls") else None


def _slug(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-60:]


def _fingerprint(model: Any, inputs: tuple[str, ...]) -> str:
    """Changes with the model's files, its max length and the libraries that make the graph."""
    import onnxruntime
    import torch

    parts = [torch.__version__, onnxruntime.__version__, str(model.max_seq_length), ",".join(inputs)]
    folder = Path(str(getattr(model[0].auto_model.config, "name_or_path", "") or "."))
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                stat = file.stat()
                parts.append(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    else:
        parts.append(str(folder))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _export(model: Any, inputs: tuple[str, ...], path: Path) -> None:
    """Export the transformer (token ids -> last hidden state); written under a temporary name
    and renamed, so replicas starting together never load half a file."""
    import torch

    transformer = model[0].auto_model

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(inputs, args, strict=True))).last_hidden_state

    features = _tokenize(model, [PROBES[0], PROBES[2]])
    example = tuple(features[name] for name in inputs)
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
    axes["hidden"] = {0: "batch", 1: "tokens"}
    path.parent.mkdir(parents=True, exist_ok=True)

    def export(temporary: Path) -> None:
        # One export at a time in a process: torch's exporter keeps its state in globals, and
        # two models exporting at a first start (the KB's and the re-ranker's, each on its own
        # thread) broke one of them ("GLOBALS.in_onnx_export must be False").
        with _EXPORTING, warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden().eval(),
                example,
                str(temporary),
                input_names=list(inputs),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )

    replace_atomically(path, export)
