"""What a search knows of the live versions besides their vectors, and its cache on disk.

A :class:`Catalog` holds each live version's title, article and language, which version an
article is ranked by, and the BM25 postings of the lexical channel. Built from the database it
costs a big KB most of its start (100,000 versions: reading them ~0.6 s, indexing their words
~1.7 s), so it is saved as a folder next to the vector index (``<index_dir>/catalog``, written
whole then published with one rename, :mod:`kb.files`) and read back at the next start when its
:class:`Stamp` still matches: the KB revision, the live versions' count and id sum (a database
restored or swapped under the same revision shows there), the default language and the code
that built it (a changed tokeniser or format rebuilds it). A catalog that cannot be read is
rebuilt from the database, which stays the source of truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import sparse

from kb import lexical, store
from kb.files import current_folder, publish_folder
from kb.lexical import LexicalIndex

log = logging.getLogger(__name__)

FORMAT = 1


class Version(NamedTuple):
    """A live version as a hit shows it (a tuple: a big KB holds 100,000 of them)."""

    id: int
    article_id: int
    key: str
    number: int
    question: str
    language: str


def _code_stamp() -> str:
    """The code a saved catalog depends on: this module and the tokeniser."""
    digest = hashlib.sha256()
    for module in (__file__, lexical.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:16]


_CODE = _code_stamp()


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a saved catalog must match to be used instead of the database."""

    revision: int
    live: int
    id_sum: int
    default_language: str
    code: str = _CODE
    format: int = FORMAT

    @property
    def live_key(self) -> str:
        """The live versions' part of the stamp, which the vector index is stamped with too."""
        return f"{self.live}:{self.id_sum}"


@dataclass(frozen=True, slots=True)
class Catalog:
    versions: dict[int, Version]
    by_article: dict[int, dict[str, Version]]  # article id -> language -> its live version
    ranked: frozenset[int]  # the versions an article is ranked by (see build)
    lexical: LexicalIndex  # one document per ranked version
    owners: np.ndarray  # lexical document -> article id

    @classmethod
    def empty(cls) -> Catalog:
        return cls({}, {}, frozenset(), LexicalIndex([]), np.zeros(0, np.int64))

    @classmethod
    def build(
        cls, live: list[tuple[store.LiveVersion, store.LiveArticle]], *, default_language: str
    ) -> Catalog:
        """The catalog of ``live`` (:func:`kb.store.live_versions`)."""
        versions = {v.id: Version(v.id, a.id, a.key, v.number, v.question, v.language) for v, a in live}
        by_article = _by_article(versions.values())
        # An article is ranked by its version in the default language when it has one, its
        # translations serve the answer: a translation would otherwise make its article look
        # closer to every question in its language than the articles that exist only in the
        # default language (measured: one Czech translation in the English example KB won
        # most Czech questions, "cancel my subscription" included).
        ranked_live = [
            (v, a)
            for v, a in live
            if v.language == default_language or default_language not in by_article[a.id]
        ]
        ranked = frozenset(v.id for v, _ in ranked_live)
        documents = [" ".join([v.question, *v.alt_questions, v.answer]) for v, _ in ranked_live]
        owners = np.fromiter((a.id for _, a in ranked_live), dtype=np.int64, count=len(ranked_live))
        return cls(versions, by_article, ranked, LexicalIndex(documents), owners)

    def save(self, path: Path, stamp: Stamp) -> None:
        """Write the catalog as ``path/current`` (see :mod:`kb.files`)."""
        versions = list(self.versions.values())
        vocabulary, by_term = self.lexical.parts()
        lex = self.lexical

        def write(folder: Path) -> None:
            with open(folder / "arrays.npz", "wb") as out:
                np.savez(
                    out,
                    id=np.fromiter((v.id for v in versions), np.int64, len(versions)),
                    article_id=np.fromiter((v.article_id for v in versions), np.int64, len(versions)),
                    number=np.fromiter((v.number for v in versions), np.int64, len(versions)),
                    ranked=np.fromiter((v.id in self.ranked for v in versions), np.bool_, len(versions)),
                    owners=self.owners,
                    data=by_term.data,
                    indices=by_term.indices,
                    indptr=by_term.indptr,
                    shape=np.array(by_term.shape, np.int64),
                )
            texts = {
                "key": [v.key for v in versions],
                "question": [v.question for v in versions],
                "language": [v.language for v in versions],
                "vocabulary": vocabulary,
            }
            (folder / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
            meta = {"stamp": asdict(stamp), "k1": lex.k1, "b": lex.b, "saturation": lex.saturation}
            (folder / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

        publish_folder(path, write)

    @classmethod
    def load(cls, path: Path, stamp: Stamp) -> Catalog | None:
        """The catalog saved in ``path`` if its stamp is ``stamp``; None when there is none, it
        is stale, or it cannot be read (logged: the caller rebuilds it from the database)."""
        folder = current_folder(path)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("stamp") != asdict(stamp):
                return None
            with np.load(folder / "arrays.npz") as data:
                arrays = {name: data[name] for name in data.files}
            texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
            return cls._from_saved(meta, arrays, texts)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the KB catalog in %s is unreadable (%s: %s): rebuilt", path, type(exc).__name__, exc)
            return None

    @classmethod
    def _from_saved(cls, meta: dict, arrays: dict[str, np.ndarray], texts: dict[str, list]) -> Catalog:
        ids = arrays["id"].tolist()
        versions = {
            vid: Version(vid, aid, key, number, question, language)
            for vid, aid, key, number, question, language in zip(
                ids,
                arrays["article_id"].tolist(),
                texts["key"],
                arrays["number"].tolist(),
                texts["question"],
                texts["language"],
                strict=True,
            )
        }
        ranked = frozenset(np.asarray(ids, np.int64)[arrays["ranked"]].tolist())
        shape = tuple(int(n) for n in arrays["shape"])
        by_term = sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        index = LexicalIndex.from_parts(
            texts["vocabulary"], by_term, k1=meta["k1"], b=meta["b"], saturation=meta["saturation"]
        )
        owners = arrays["owners"]
        if len(owners) != len(index) or len(versions) != len(ids):
            raise ValueError("the parts disagree in size")
        return cls(versions, _by_article(versions.values()), ranked, index, owners)


def _by_article(versions: Iterable[Version]) -> dict[int, dict[str, Version]]:
    by_article: dict[int, dict[str, Version]] = {}
    for v in versions:
        by_article.setdefault(v.article_id, {})[v.language] = v
    return by_article
