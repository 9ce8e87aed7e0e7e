"""Errors of the knowledge base.

KbError                     root of this package
├── ModelLoadError          the embedding model cannot be loaded (model)
├── IndexMismatchError      the index on disk was built for another model or dimension
├── IndexMissingError       no index on disk where one was expected (path)
└── MigrationError          a migration left rows whose references are broken (rows)
"""

from __future__ import annotations

from pathlib import Path


class KbError(Exception):
    """Root of the kb package's errors."""


class ModelLoadError(KbError):
    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"cannot load embedding model {model!r}: {reason}")


class IndexMismatchError(KbError):
    def __init__(self, path: Path, *, index_model: str, index_dim: int, model: str, dim: int) -> None:
        self.path = path
        self.index_model, self.index_dim = index_model, index_dim
        self.model, self.dim = model, dim
        super().__init__(
            f"the index in {path} was built with model {index_model!r} (dimension {index_dim}), "
            f"but the configured model is {model!r} (dimension {dim}); "
            "run `helpdesk kb rebuild` to rebuild it from the database"
        )


class IndexMissingError(KbError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no search index in {path}; run `helpdesk kb rebuild`")


class ArticleNotFoundError(KbError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no article with key {key!r} (see `helpdesk kb list`)")


class VersionNotFoundError(KbError):
    def __init__(self, key: str, number: int, language: str | None) -> None:
        self.key, self.number, self.language = key, number, language
        where = f" in language {language!r}" if language else ""
        super().__init__(f"article {key!r} has no version {number}{where} (see `helpdesk kb show {key}`)")


class MigrationError(KbError):
    def __init__(self, rows: list[object]) -> None:
        self.rows = rows
        super().__init__(f"the migration left {len(rows)} row(s) with broken references, e.g. {rows[:3]}")
