"""Locating target words in stimulus texts (character spans)."""
from __future__ import annotations

import re


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
                                      f"fix the text or the target")
        spans.append(span)
    return spans
