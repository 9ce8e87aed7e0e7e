"""Files and folders put in place whole (kb.files)."""

from __future__ import annotations

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


def test_a_published_folder_replaces_the_last_and_a_failed_one_is_dropped(tmp_path: Path) -> None:
    first = publish_folder(tmp_path, lambda g: (g / "data").write_text("1"))
    second = publish_folder(tmp_path, lambda g: (g / "data").write_text("2"))
    assert current_folder(tmp_path) == second.resolve() and not first.exists()

    def fail(generation: Path) -> None:
        (generation / "data").write_text("half")
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        publish_folder(tmp_path, fail)
    assert (current_folder(tmp_path) / "data").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", second.name]
