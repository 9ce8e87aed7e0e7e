"""Files and folders put in place whole (kb.files)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from kb.files import current_folder, publish_folder, replace_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    replace_atomically(target, lambda t: t.write_text("old"))

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def aged(folder: Path, seconds: float = 3600.0) -> Path:
    then = time.time() - seconds
    os.utime(folder, (then, then))
    return folder


def test_a_published_folder_replaces_the_last_and_a_failed_one_is_dropped(tmp_path: Path) -> None:
    first = publish_folder(tmp_path, lambda g: (g / "data").write_text("1"))
    second = publish_folder(tmp_path, lambda g: (g / "data").write_text("2"))
    assert current_folder(tmp_path) == second.resolve()
    assert (first / "data").read_text() == "1", "the generation just replaced stays for its readers"
    aged(first)
    third = publish_folder(tmp_path, lambda g: (g / "data").write_text("3"))
    assert not first.exists() and second.exists() and current_folder(tmp_path) == third.resolve()
    assert sorted(p.name for p in third.iterdir()) == ["data"], "no lock file left in a published one"

    def fail(generation: Path) -> None:
        (generation / "data").write_text("half")
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        publish_folder(tmp_path, fail)
    assert (current_folder(tmp_path) / "data").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["current", second.name, third.name])


def test_a_generation_another_process_is_writing_is_left_to_it(tmp_path: Path) -> None:
    """Replicas publish into one folder: a generation still being written (its lock held, or
    just created) survives another's publish; one whose writer died is removed."""
    publish_folder(tmp_path, lambda g: (g / "data").write_text("1"))
    started = threading.Event()
    finish = threading.Event()

    def slow(generation: Path) -> None:
        (generation / "data").write_text("slow")
        started.set()
        finish.wait(30)

    writer = threading.Thread(target=lambda: publish_folder(tmp_path, slow))
    writer.start()
    try:
        assert started.wait(10)
        (slow_one,) = [g for g in tmp_path.glob("gen-*") if (g / "data").read_text() == "slow"]
        aged(slow_one)  # old, but its lock is held
        abandoned = tmp_path / "gen-abandoned"
        abandoned.mkdir()
        (abandoned / ".writing").write_text("")  # its writer died: nobody holds the lock
        aged(abandoned)
        just_made = tmp_path / "gen-just-made"  # a writer about to take its lock
        just_made.mkdir()
        publish_folder(tmp_path, lambda g: (g / "data").write_text("2"))
        assert slow_one.exists() and just_made.exists() and not abandoned.exists()
    finally:
        finish.set()
        writer.join(10)
    assert (current_folder(tmp_path) / "data").read_text() == "slow"
