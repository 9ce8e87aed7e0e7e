"""The lexical channel: Okapi BM25 over each live version's question, alternatives and answer.

Dense vectors miss rare exact words (product names, error codes, "PayPal"); BM25 catches them.
Raw BM25 grows without bound, so :meth:`LexicalIndex.scores` squashes it to [0, 1) with
``s / (s + saturation)``: an absolute scale (no per-query normalisation) that can be fused with
cosine similarity under fixed thresholds.
"""

from __future__ import annotations

import re
from array import array
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
    """BM25 over a fixed list of documents (one per article version).

    The weights are kept term by term (a terms x documents sparse matrix), so a query reads the
    postings of its own terms only, and :meth:`top` picks the best documents without sorting
    all of them."""

    def __init__(
        self, documents: Sequence[str], *, k1: float = 1.2, b: float = 0.75, saturation: float = 8.0
    ):
        self.k1, self.b, self.saturation = k1, b, saturation
        self.vocabulary: dict[str, int] = {}
        terms, lengths = self._term_ids(documents)
        n_docs = len(documents)
        doc_of = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
        # Term frequencies: duplicates (doc, term) are summed on conversion.
        counts = sparse.csr_matrix(
            (np.ones(len(terms), dtype=np.float32), (doc_of, terms)), shape=(n_docs, len(self.vocabulary))
        )
        counts.sum_duplicates()
        average = float(lengths.mean()) if n_docs and lengths.mean() > 0 else 1.0
        norm = (k1 * (1 - b + b * lengths.astype(np.float32) / average)).astype(np.float32)
        tf = counts.data
        rows = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        document_frequency = np.bincount(counts.indices, minlength=len(self.vocabulary)).astype(np.float32)
        idf = np.log(1 + (max(n_docs, 1) - document_frequency + 0.5) / (document_frequency + 0.5))
        counts.data = (tf * (k1 + 1) / (tf + norm[rows]) * idf[counts.indices]).astype(np.float32)
        self._by_term = counts.T.tocsr()  # terms x documents
        self._n_docs = n_docs

    @classmethod
    def from_parts(
        cls, vocabulary: list[str], by_term: sparse.csr_matrix, *, k1: float, b: float, saturation: float
    ) -> LexicalIndex:
        """An index saved with :meth:`parts` (the terms in id order, the weights terms x documents)."""
        index = cls.__new__(cls)
        index.k1, index.b, index.saturation = k1, b, saturation
        index.vocabulary = {term: position for position, term in enumerate(vocabulary)}
        index._by_term = by_term
        index._n_docs = by_term.shape[1]
        return index

    def parts(self) -> tuple[list[str], sparse.csr_matrix]:
        """What :meth:`from_parts` takes back: the terms in id order and the weights."""
        return list(self.vocabulary), self._by_term

    def _term_ids(self, documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every document's term ids, concatenated, and each document's count of them; the
        vocabulary grows as terms are met. A word is tokenised and stemmed once, however often
        it occurs."""
        known: dict[str, int] = {}  # word as written -> term id, -1 when dropped
        terms: array[int] = array("q")
        lengths = np.zeros(len(documents), dtype=np.int64)
        for position, document in enumerate(documents):
            before = len(terms)
            for word in _TOKEN.findall(document):
                term = known.get(word)
                if term is None:
                    term = known[word] = self._term_of(word)
                if term >= 0:
                    terms.append(term)
            lengths[position] = len(terms) - before
        return np.frombuffer(terms, dtype=np.int64) if terms else np.zeros(0, np.int64), lengths

    def _term_of(self, word: str) -> int:
        word = word.lower()
        if word in STOPWORDS or len(word) <= 1:
            return -1
        return self.vocabulary.setdefault(_stem(word), len(self.vocabulary))

    def __len__(self) -> int:
        return self._n_docs

    def _query_terms(self, query: str) -> list[int]:
        return sorted({self.vocabulary[t] for t in tokens(query) if t in self.vocabulary})

    def raw_scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 per (query, document)."""
        out = np.zeros((len(queries), len(self)), dtype=np.float32)
        for row, query in enumerate(queries):
            terms = self._query_terms(query)
            if terms:
                out[row] = np.asarray(self._by_term[terms].sum(axis=0)).ravel()
        return out

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 squashed to [0, 1)."""
        raw = self.raw_scores(queries)
        return raw / (raw + self.saturation)

    def top(self, queries: Sequence[str], n: int) -> list[list[tuple[int, float]]]:
        """Per query, up to ``n`` (document, squashed BM25) with a score above 0, best first
        (ties: the lower document first); reads only the postings of the query's terms."""
        results = []
        for query in queries:
            terms = self._query_terms(query)
            if not terms or n <= 0:
                results.append([])
                continue
            postings = self._by_term[terms]
            raw = np.bincount(postings.indices, weights=postings.data, minlength=len(self))
            docs = np.flatnonzero(raw > 0)
            if len(docs) > n:
                # Everything scoring at least the n-th best, ties at the edge included.
                edge = np.partition(raw[docs], len(docs) - n)[len(docs) - n]
                docs = docs[raw[docs] >= edge]
            best = raw[docs]
            order = np.lexsort((docs, -best))[:n]
            squashed = best[order] / (best[order] + self.saturation)
            results.append(list(zip(docs[order].tolist(), squashed.tolist(), strict=True)))
        return results
