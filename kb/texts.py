"""What gets embedded for an article version: its question, each alternative, answer chunks."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from kb.models import EmbeddingKind

CHUNK_WORDS = 120
_FENCE = re.compile(r"^\s*(```|~~~)")


def content_hash(*, question: str, alt_questions: Sequence[str], answer: str, tags: Sequence[str]) -> str:
    payload = json.dumps([question, list(alt_questions), answer, sorted(tags)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def answer_chunks(answer: str, *, max_words: int = CHUNK_WORDS) -> list[str]:
    """Paragraph-aligned pieces of at most ``max_words`` words (a longer paragraph is cut)."""
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in (p for p in re.split(r"\n\s*\n", answer) if p.strip()):
        words = [w for w in paragraph.split() if not _FENCE.match(w)]
        while words:
            room = max_words - len(current)
            if room <= 0:
                chunks.append(" ".join(current))
                current, room = [], max_words
            current.extend(words[:room])
            words = words[room:]
    if current:
        chunks.append(" ".join(current))
    return chunks


def embedding_items(
    *, question: str, alt_questions: Sequence[str], answer: str, answers: bool = True
) -> list[tuple[EmbeddingKind, int, str]]:
    """What to embed, in order; ``answers=False`` leaves the answer chunks out."""
    items = [(EmbeddingKind.QUESTION, 0, question)]
    items += [(EmbeddingKind.ALTERNATIVE, i, alt) for i, alt in enumerate(alt_questions)]
    if answers:
        items += [(EmbeddingKind.ANSWER, i, chunk) for i, chunk in enumerate(answer_chunks(answer))]
    return items
