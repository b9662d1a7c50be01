"""Locating target words in stimulus texts (character spans)."""
from __future__ import annotations

import re
import unicodedata


class TargetNotFoundError(ValueError):
    """A stimulus text does not contain one of its target words."""


def as_targets(target) -> list[str]:
    """A target cell (a word, a list of words, or a '|'-separated string) as a list of words."""
    if target is None:
        return []
    if isinstance(target, str):
        return [t.strip() for t in target.split("|") if t.strip()]
    return [str(t).strip() for t in target if str(t).strip()]


def find_word(text: str, word: str, start: int = 0) -> tuple[int, int] | None:
    """Character span of the first whole-word occurrence of ``word`` in ``text`` at or after ``start``.

    Case-sensitive first, then case-insensitive ("Apple" at the start of a sentence)."""
    pattern = r"(?<![\w])" + re.escape(word) + r"(?![\w])"
    for flags in (0, re.IGNORECASE):
        m = re.compile(pattern, flags).search(text, start)
        if m:
            return m.span()
    return None


def missing_word_advice(text: str, word: str) -> str:
    """What to do about a target ``word`` that :func:`find_word` does not find in ``text``: when the two only
    differ in their Unicode normal form (an accented letter composed in one, decomposed in the other, which
    look identical when printed), say so; else fix the spelling."""
    nfc = lambda s: unicodedata.normalize("NFC", s)  # noqa: E731
    if find_word(nfc(text), nfc(word)) is not None:
        forms = [f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, text)] or ["neither NFC nor NFD"]
        wforms = [f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, word)] or ["neither NFC nor NFD"]
        return (f"the text ({'/'.join(forms)}) and the target ({'/'.join(wforms)}) are in different Unicode normal "
                f"forms and only look the same: normalise both, e.g. unicodedata.normalize('NFC', s)")
    return "fix the spelling of the target or of the text"


def target_spans(text: str, target, *, where: str = "") -> list[tuple[int, int]]:
    """One character span per target word: its first whole-word occurrence.

    Raises TargetNotFoundError naming the stimulus and the word."""
    words = as_targets(target)
    if not isinstance(text, str) or not text.strip():
        raise TargetNotFoundError(f"{where}empty text: every stimulus needs a non-empty text")
    if not words:
        raise TargetNotFoundError(f"{where}text {text!r} has no target word; give the word(s) to pool over, "
                                  f"or use pooling='last_token'")
    spans = []
    for w in words:
        span = find_word(text, w)
        if span is None:
            raise TargetNotFoundError(f"{where}target word {w!r} does not occur as a whole word in {text!r}; "
                                      f"{missing_word_advice(text, w)}")
        spans.append(span)
    return spans
