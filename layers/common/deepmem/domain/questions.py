"""What a usable question is, for every generator: one normalisation and one set of limits,
so an LLM's answer and the offline rules are held to the same bar before a pair is written."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

#: Longer than any question a user types; the pairs table and the dashboard need no more.
MAX_QUESTION_CHARS = 300
MIN_QUESTION_WORDS = 2

_LIST_PREFIX_RE = re.compile(
    r"^\s*(?:[-*\u2022>]+|\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)]|(?:Q(?:uestion)?\s*\d*)\s*[:.)-])\s*",
    re.IGNORECASE,
)
_META_RE = re.compile(
    r"^(?:here\s+(?:are|is)|below\s+(?:are|is)|sure\b|certainly\b|of course\b|okay\b|ok\b|"
    r"i\s+(?:hope|have|can|will)|these\s+questions|the\s+following|note\s*:|questions?\s*:|"
    r"answers?\s*:|json\b|```)",
    re.IGNORECASE,
)
# Questions that only make sense next to the passage are not what a user would type.
_PASSAGE_REF_RE = re.compile(
    r"\baccording to (?:the|this)\b|\bbased on (?:the|this) (?:text|passage|chunk|excerpt|"
    r"context|above)\b|\b(?:the|this) (?:passage|excerpt|chunk)\b|"
    r"\b(?:the|this) (?:text|context) (?:above|provided|given)\b|\bthe author\b",
    re.IGNORECASE,
)


def strip_control_characters(raw: str) -> str:
    """`raw` with every control character (NUL included) made a space, and lone surrogates and
    noncharacters dropped: no store can hold them (PostgreSQL refuses NUL in text and
    `\\u0000` in jsonb, UTF-8 cannot encode a lone surrogate), and no user types them."""
    return "".join(
        " " if category == "Cc" else ch
        for ch in raw
        if (category := unicodedata.category(ch)) not in ("Cs", "Cn")
    )


def normalize_question(raw: str) -> str:
    """Strip control characters, list prefixes, quotes and markdown; one space between words;
    end with one "?". Returns "" for anything that is not a usable question."""
    text = " ".join(strip_control_characters(raw).split())
    text = _LIST_PREFIX_RE.sub("", text, count=1)
    text = text.strip().strip("*_`\"'\u201c\u201d").strip()
    if not text or _META_RE.match(text) or text.endswith(":"):
        return ""
    text = text.rstrip(" ?.!,;")
    if not text:
        return ""
    return f"{text}?"


def is_usable(question: str, max_chars: int = MAX_QUESTION_CHARS) -> bool:
    return (
        bool(question)
        and len(question) <= max_chars
        and len(question.split()) >= MIN_QUESTION_WORDS
        and any(c.isalpha() for c in question)
        and not _PASSAGE_REF_RE.search(question)
    )


def clean_questions(
    raw: Iterable[object], count: int, max_chars: int = MAX_QUESTION_CHARS
) -> tuple[list[str], int]:
    """Normalise, reject, dedupe (case-insensitive) and keep at most `count`.
    Returns (questions, how many candidates were rejected or duplicates)."""
    kept: list[str] = []
    seen: set[str] = set()
    rejected = 0
    for item in raw:
        question = normalize_question(item) if isinstance(item, str) else ""
        if not is_usable(question, max_chars):
            rejected += 1
            continue
        key = question.casefold()
        if key in seen:
            rejected += 1
            continue
        seen.add(key)
        kept.append(question)
    return kept[:count], rejected
