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
from collections.abc import Callable
from pathlib import Path

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


def publish_folder(path: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a new generation folder ``path/gen-*``, then point ``path/current``
    at it with one rename; older generations are removed. Returns the new generation."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    generation = Path(tempfile.mkdtemp(prefix="gen-", dir=path))
    try:
        write(generation)
        link = path / f".{CURRENT}-{generation.name}"
        link.symlink_to(generation.name)
        os.replace(link, path / CURRENT)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    for old in path.glob("gen-*"):
        if old.name != generation.name:
            shutil.rmtree(old, ignore_errors=True)
    return generation


def current_folder(path: Path) -> Path:
    """The published generation of ``path`` (may not exist)."""
    return (Path(path) / CURRENT).resolve()
