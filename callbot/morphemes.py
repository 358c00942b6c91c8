"""Korean morphemes, by the Kiwi analyzer (``kiwipiepy``, its model in ``kiwipiepy-model``).

The understanding compares questions by syllable pieces, which survive spacing mistakes and
recognition slips; the morphemes add what syllables cannot see: the dictionary form of verbs
and adjectives (내요, 냈는데, 낼 -> 내다), and nouns cut from their particles.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

# Content morphemes: nouns, verb and adjective stems, roots, numbers, foreign words.
CONTENT_TAGS = frozenset({"NNG", "NNP", "VV", "VA", "XR", "SL", "SN", "SH", "MAG"})

_kiwi: Any = None
_lock = threading.Lock()


def _analyzer() -> Any:
    global _kiwi
    with _lock:
        if _kiwi is None:
            from kiwipiepy import Kiwi

            _kiwi = Kiwi()
        return _kiwi


@lru_cache(maxsize=20000)
def content_morphemes(text: str) -> tuple[str, ...]:
    """The content morphemes of a Korean text, verbs and adjectives as stems (내, 얼)."""
    tokens = _analyzer().tokenize(text)
    return tuple(token.form for token in tokens if token.tag in CONTENT_TAGS)
