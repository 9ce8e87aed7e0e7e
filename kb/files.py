"""Files and folders written whole, then put in place with one rename.

A reader (another process included) sees the old file or the new one, never half of one; a
process killed mid-write leaves a temporary file or folder behind, never a broken target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: generations being written are told by age alone
    fcntl = None  # type: ignore[assignment]

CURRENT = "current"  # the symlink naming a folder's published generation
STALE_SECONDS = 600.0  # a temporary file this old was left by a killed process (an ONNX export
# takes seconds)


def replace_atomically(target: Path, write: Callable[[Path], object], *, mode: int = 0o644) -> Path:
    """Let ``write`` fill a temporary file beside ``target``, then rename it over ``target``.

    Temporary files are named ``.<name>.part-*``; ones older than :data:`STALE_SECONDS` (left by
    a killed process) are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.part-"
    for left in target.parent.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > STALE_SECONDS:
                left.unlink()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=prefix)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


@contextlib.contextmanager
def one_maker(target: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` exclusively for the block, across processes: replicas
    (or test workers) that find a file missing together make it once, the others waiting and
    then finding it there. Without ``fcntl`` (not POSIX) each makes its own, as before."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(f".{target.name}.lock")):
        yield


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (made if missing) for the block; the system
    releases it should the process die. Without ``fcntl``, no lock."""
    with open(lock_file, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def publish_folder(path: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a new generation folder ``path/gen-*``, then point ``path/current``
    at it with one rename. Returns the new generation.

    Several processes (replicas) may publish into one folder and read it meanwhile, so an older
    generation is removed only when nobody can be using it: the one just replaced stays until
    the next publish (a reader may have opened it a moment ago), and one another process is
    still writing (its lock on ``.writing`` held, or created in the last minute) is left to it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    generation = Path(tempfile.mkdtemp(prefix="gen-", dir=path))
    replaced: str | None = None
    try:
        with _writing(generation):
            write(generation)
            link = path / f".{CURRENT}-{generation.name}"
            link.symlink_to(generation.name)
            with contextlib.suppress(OSError):
                replaced = os.readlink(path / CURRENT)
            os.replace(link, path / CURRENT)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    keep = {generation.name, replaced}
    with contextlib.suppress(OSError):
        keep.add(os.readlink(path / CURRENT))  # another process may have published since
    for old in path.glob("gen-*"):
        if old.name not in keep and not _being_written(old):
            shutil.rmtree(old, ignore_errors=True)
    return generation


WRITING = ".writing"  # a generation's lock file while a process fills it
FRESH_SECONDS = 60.0  # a generation this young may be one whose writer has not locked it yet


@contextlib.contextmanager
def _writing(generation: Path) -> Iterator[None]:
    """Hold ``generation``'s writing lock (released by the system should the process die)."""
    marker = generation / WRITING
    with _locked(marker):
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()


def _being_written(generation: Path) -> bool:
    try:
        if time.time() - generation.stat().st_mtime < FRESH_SECONDS:
            return True
        handle = open(generation / WRITING)
    except OSError:  # gone, or no lock file: published or abandoned
        return False
    with handle:
        if fcntl is None:
            return True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # a writer that died: its lock went with it


def current_folder(path: Path) -> Path:
    """The published generation of ``path`` (may not exist)."""
    return (Path(path) / CURRENT).resolve()
