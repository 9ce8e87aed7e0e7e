"""Query vectors of repeated questions, kept so the model encodes each one once.

Customers ask the same short things again and again ("refund", "reset password"); encoding one
query costs ~12 ms on one core, a lookup microseconds. :class:`QueryCache` keeps the most recently
used query vectors of one model (LRU), keyed by the text with its whitespace normalised (the
models' tokenisers split on whitespace, so the vector is the same). A vector depends on the model
and the text only, never on the KB, so a new KB revision leaves the cache valid (the hits are
computed afresh on every search); a cache belongs to one model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kb.encoder import Kind, TextEncoder

QUERY_CACHE_SIZE = 1024  # query vectors per model (384 floats each: ~1.5 MB)


def normalise(text: str) -> str:
    return " ".join(text.split())


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0


class QueryCache:
    """An LRU of ``size`` query vectors of ``model``; ``size`` 0 turns it off. Thread-safe:
    searches run in worker threads."""

    def __init__(self, model: TextEncoder, *, size: int = QUERY_CACHE_SIZE, kind: Kind = "query") -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size!r}")
        self.model = model
        self.size = size
        self.kind: Kind = kind
        self.stats = CacheStats()
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and normalise(text) in self._vectors

    def clear(self) -> None:
        """Drop every cached vector (and the text it is keyed by)."""
        with self._lock:
            self._vectors.clear()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The model's query vectors of ``texts``, encoding only those not cached (each
        distinct one once, in one call)."""
        if self.size == 0:
            return self.model.encode(texts, kind=self.kind)
        keys = [normalise(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[key] = vector
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            encoded = np.asarray(self.model.encode(missing, kind=self.kind), dtype=np.float32)
            fresh = {key: vector.copy() for key, vector in zip(missing, encoded, strict=True)}
            found.update(fresh)
            with self._lock:
                self._vectors.update(fresh)
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        new = set(missing)
        misses = sum(1 for k in keys if k in new)
        with self._lock:
            self.stats.hits += len(keys) - misses
            self.stats.misses += misses
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.model.dim), np.float32)
