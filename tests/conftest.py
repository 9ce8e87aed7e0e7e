"""Shared fixtures: the real model (loaded once), throwaway databases and indexes, a stub encoder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings
from bot.runtime import Services, open_services
from kb.encoder import SentenceEncoder, TextEncoder

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE_FAQ = ROOT / "examples" / "faq.md"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip with the reason when it is absent."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is missing (clone ../shared beside the repo)")
    return path


class StubEncoder:
    """Deterministic bag-of-words hashing: for tests where the model is beside the point."""

    model_id = "stub-hashing-64"
    dim = 64

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, bucket % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


@pytest.fixture(scope="session")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture
def stub_encoder() -> StubEncoder:
    return StubEncoder()


def make_settings(tmp_path: Path, **kb: object) -> Settings:
    return Settings(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/helpdesk.db"},
        kb={"index_dir": str(tmp_path / "index"), **kb},
        telegram={"token": "100000001:TEST", "poll_timeout": 1},
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def services(settings: Settings, encoder: TextEncoder) -> AsyncIterator[Services]:
    async with open_services(settings, encoder=encoder) as opened:
        yield opened
