"""Text into sentences and chunks, and the stable id of a chunk: one definition for the dataset
builder and the offline question generator."""

from __future__ import annotations

import hashlib
import re

DEFAULT_CHUNK_SIZE = 160  # words: about 220 WordPiece tokens, under MiniLM's 256
DEFAULT_OVERLAP = 32  # words

_PARAGRAPH = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? (optionally closed by a quote or bracket) followed by whitespace
# and something that can start a sentence; "e.g. this" and "3.5 times" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9#*>-])")
#: A Markdown ATX heading; its text is group 1.
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def _segments(text: str) -> list[tuple[str, str]]:
    """(separator before, sentence) pairs: "\n\n" opens a paragraph, "\n" a heading or a
    list item inside one, " " joins sentences of a paragraph."""
    segments: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH.split(text):
        # Runs of prose lines, and headings or list items that stand alone.
        blocks: list[tuple[bool, str]] = []
        prose: list[str] = []
        for line in paragraph.splitlines():
            stripped = " ".join(line.split())
            if HEADING.match(stripped) or stripped.startswith(("- ", "* ", "+ ")):
                if prose:
                    blocks.append((False, " ".join(prose)))
                    prose = []
                blocks.append((True, stripped))
            elif stripped:
                prose.append(stripped)
        if prose:
            blocks.append((False, " ".join(prose)))
        for number, (standalone, block) in enumerate(blocks):
            sentences = [block] if standalone else _sentences_of(block)
            for index, sentence in enumerate(sentences):
                opening = "\n\n" if number == 0 else "\n"
                segments.append((opening if index == 0 else " ", sentence))
    return segments


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, whitespace collapsed; a Markdown heading or a list item stands
    alone, and a paragraph break always ends a sentence."""
    return [sentence for _, sentence in _segments(text)]


def _sentences_of(paragraph: str) -> list[str]:
    return [" ".join(part.split()) for part in _SENTENCE_END.split(paragraph) if part.strip()]


def chunk_text(
    text: str, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_OVERLAP
) -> list[str]:
    """Cut `text` into chunks of at most `chunk_size` words that end on sentence boundaries.

    Each chunk after the first starts with the last whole sentences of the previous one, up
    to `overlap` words, so a fact that straddles a boundary is whole in one chunk. A sentence
    longer than `chunk_size` is cut on word boundaries with `overlap` words repeated.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1 word")
    if not 0 <= overlap < chunk_size:
        raise ValueError("overlap must be at least 0 and smaller than chunk_size")
    # A unit is (separator before it, its words); a chunk keeps its paragraph breaks.
    units: list[tuple[str, list[str]]] = []
    for separator, sentence in _segments(text):
        words = sentence.split()
        if len(words) <= chunk_size:
            units.append((separator, words))
            continue
        step = chunk_size - overlap
        for start in range(0, len(words), step):
            units.append((separator if start == 0 else " ", words[start : start + chunk_size]))
            if start + chunk_size >= len(words):
                break

    chunks: list[list[tuple[str, list[str]]]] = []
    current: list[tuple[str, list[str]]] = []
    size = 0
    for unit in units:
        if current and size + len(unit[1]) > chunk_size:
            chunks.append(current)
            carry: list[tuple[str, list[str]]] = []
            carried = 0
            for previous in reversed(current):
                if carried + len(previous[1]) > overlap:
                    break
                carry.insert(0, previous)
                carried += len(previous[1])
            if carried + len(unit[1]) > chunk_size:
                carry, carried = [], 0
            current, size = carry, carried
        current.append(unit)
        size += len(unit[1])
    if current:
        chunks.append(current)
    return ["".join(sep + " ".join(words) for sep, words in chunk).strip() for chunk in chunks]


def chunk_id(source: str, key: str, index: int, text: str) -> str:
    """A stable id: the same source, document key, position and content give the same id."""
    digest = hashlib.sha256("\x1f".join((source, key, str(index), text)).encode("utf-8"))
    return digest.hexdigest()[:32]
