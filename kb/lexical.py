"""The lexical channel: Okapi BM25 over each live version's question, alternatives and answer.

Dense vectors miss rare exact words (product names, error codes, "PayPal"); BM25 catches them.
Raw BM25 grows without bound, so :meth:`LexicalIndex.scores` squashes it to [0, 1) with
``s / (s + saturation)``: an absolute scale (no per-query normalisation) that can be fused with
cosine similarity under fixed thresholds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves""".split()
)


def tokens(text: str) -> list[str]:
    words = (w.lower() for w in _TOKEN.findall(text))
    return [_stem(w) for w in words if w not in STOPWORDS and len(w) > 1]


def _stem(word: str) -> str:
    """A deliberately light stemmer: plural and common verb endings only."""
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


class LexicalIndex:
    """BM25 over a fixed list of documents (one per article version), scored in one sparse product."""

    def __init__(
        self, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75, saturation: float = 8.0
    ):
        self.saturation = saturation
        self.vocabulary: dict[str, int] = {}
        counts = [Counter(tokens(doc)) for doc in documents]
        for counter in counts:
            for term in counter:
                self.vocabulary.setdefault(term, len(self.vocabulary))
        n_docs = max(len(documents), 1)
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float32)
        average = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        document_frequency = np.zeros(len(self.vocabulary), dtype=np.float32)
        rows, cols, values = [], [], []
        for row, counter in enumerate(counts):
            norm = k1 * (1 - b + b * lengths[row] / average)
            for term, tf in counter.items():
                col = self.vocabulary[term]
                document_frequency[col] += 1
                rows.append(row)
                cols.append(col)
                values.append(tf * (k1 + 1) / (tf + norm))
        idf = np.log(1 + (n_docs - document_frequency + 0.5) / (document_frequency + 0.5))
        matrix = sparse.csr_matrix(
            (np.asarray(values, dtype=np.float32), (rows, cols)), shape=(len(documents), len(self.vocabulary))
        )
        self._matrix = (matrix @ sparse.diags(idf.astype(np.float32))).tocsr()

    def __len__(self) -> int:
        return self._matrix.shape[0]

    def raw_scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 per (query, document)."""
        query_matrix = sparse.lil_matrix((len(queries), len(self.vocabulary)), dtype=np.float32)
        for row, query in enumerate(queries):
            for term in set(tokens(query)):
                col = self.vocabulary.get(term)
                if col is not None:
                    query_matrix[row, col] = 1.0
        if len(self) == 0:
            return np.zeros((len(queries), 0), dtype=np.float32)
        return np.asarray((query_matrix.tocsr() @ self._matrix.T).todense(), dtype=np.float32)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 squashed to [0, 1)."""
        raw = self.raw_scores(queries)
        return raw / (raw + self.saturation)
