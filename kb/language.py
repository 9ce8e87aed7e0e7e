"""Language identification for entries that do not declare their language.

``detect_language(text)`` returns a lower-case ISO 639-1 code (``"en"``, ``"de"`` ...) or
``None`` when the text is too short (under three words; for scripts written without spaces,
two characters count as a word) or the guess too uncertain (under 50% probability).

It uses py3langid's bundled model (about 140 languages; nothing is downloaded), loaded on the
first call and shared by every thread after that. Its few regional and historical labels are
folded into their ISO 639-1 language (Egyptian and Moroccan Arabic into ``ar``, Cantonese and
Wu into ``zh`` ...) before the probabilities are compared; labels with no ISO 639-1 code are
never returned.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from typing import Any

__all__ = ["MIN_CONFIDENCE", "MIN_WORDS", "base_language", "detect_language"]

MIN_WORDS = 3
MIN_CONFIDENCE = 0.5

# py3langid labels without an ISO 639-1 code that belong to a language that has one.
_FOLDED = {
    "ary": "ar",
    "arz": "ar",
    "uzs": "uz",
    "yue": "zh",
    "wuu": "zh",
    "gug": "gn",
    "fuv": "ff",
}
_ISO_639_1 = re.compile(r"^[a-z]{2}$")
_WORD = re.compile(r"[^\W\d_]+")
# Han, kana, Thai, Lao, Khmer, Myanmar: written without spaces between words.
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")

_identifier: Any = None
_lock = threading.Lock()


def detect_language(text: str) -> str | None:
    """The text's ISO 639-1 language code, or ``None`` when too short or too uncertain."""
    if _word_count(text) < MIN_WORDS:
        return None
    scores: defaultdict[str, float] = defaultdict(float)
    for label, probability in _get_identifier().rank(text):
        code = _FOLDED.get(label, label)
        if _ISO_639_1.match(code):
            scores[code] += float(probability)
    if not scores:
        return None
    code = max(scores, key=scores.__getitem__)
    return code if scores[code] >= MIN_CONFIDENCE else None


def base_language(tag: str | None) -> str | None:
    """The language of a tag as :func:`detect_language` names it: Telegram's ``pt-br`` or
    ``zh-hans``, a file's ``pt_BR``, are ``pt`` and ``zh``; ``None`` for none or an empty one."""
    if not tag:
        return None
    return tag.strip().replace("_", "-").split("-")[0].lower() or None


def _word_count(text: str) -> int:
    """Words of letters; in a run of unspaced script every two characters count as one."""
    count = 0
    for word in _WORD.findall(text):
        unspaced = len(_UNSPACED.findall(word))
        count += (unspaced + 1) // 2 + (1 if unspaced < len(word) else 0)
    return count


def load() -> None:
    """Load the identifier now, not at the first message that needs it (a bot's start does it
    beside its other loading: the first answer waited 0.6 s for it)."""
    _get_identifier()


def _get_identifier() -> Any:
    """py3langid's identifier with normalised probabilities, loaded once (about a second)."""
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier
