"""The offline question generator: deterministic, readable, distinct questions from the chunk."""

from __future__ import annotations

import asyncio
import re

import pytest
from deepmem.adapters.generators.offline import OfflineQuestionGenerator
from deepmem.domain.chunks import Chunk
from deepmem.domain.models import ChunkQuestions
from deepmem.domain.text import chunk_text
from deepmem.local.stdlib_corpus import iter_stdlib_docs

EVEREST = Chunk(
    id="everest",
    text=(
        "Mount Everest is the highest mountain on Earth above sea level. It lies in the "
        "Mahalangur Himal sub-range of the Himalayas. The China-Nepal border runs across its "
        "summit point. Its elevation was most recently established in 2020 by Chinese and "
        "Nepali authorities."
    ),
)
BOUNDARY = Chunk(
    id="boundary",
    text=(
        "The boundary layer is the thin layer of fluid near a solid surface where viscous "
        "effects are significant. Heat transfer in the boundary layer depends on the Prandtl "
        "number. Experiments show that transition to turbulence occurs at a critical Reynolds "
        "number."
    ),
)
DOCSTRING = Chunk(
    id="stdlib:json.dumps",
    text=(
        "json.dumps\n\nSerialize obj to a JSON formatted str. If skipkeys is true then dict "
        "keys that are not basic types will be skipped instead of raising a TypeError. The "
        "indent argument controls pretty printing of nested arrays and objects."
    ),
    metadata={"title": "json.dumps"},
)
WELL_FORMED = re.compile(r"^[A-Z][^?\n]{8,198}\?$")


def _questions(chunk: Chunk, count: int = 3) -> list[str]:
    return asyncio.run(OfflineQuestionGenerator().generate(chunk, count)).questions


def test_definitions_become_what_is_questions() -> None:
    # The definition's subject is asked first together with another phrase of its sentence
    # (more of the sentence's words: a better retrieval cue), then on its own.
    everest, boundary = _questions(EVEREST, 5), _questions(BOUNDARY, 4)
    assert "Mount Everest" in everest[0] and "What is Mount Everest?" in everest[1:]
    assert "the boundary layer" in boundary[0] and "What is the boundary layer?" in boundary[1:]


def test_a_code_title_is_asked_about_first() -> None:
    assert _questions(DOCSTRING)[0] == "What does json.dumps do?"


def test_a_markdown_heading_is_the_title() -> None:
    chunk = Chunk(
        id="install",
        text="# Installing\n\nRun the installer and follow the prompts. The installer creates "
        "a virtual environment and writes a configuration file to your home folder.",
    )
    questions = _questions(chunk)
    assert questions[0] == "What is Installing?"
    assert "How do I run the installer and follow the prompts?" in questions


@pytest.mark.parametrize("chunk", [EVEREST, BOUNDARY, DOCSTRING])
def test_questions_are_well_formed_distinct_and_about_the_chunk(chunk: Chunk) -> None:
    questions = _questions(chunk, 3)
    assert len(questions) == 3
    assert len({q.lower() for q in questions}) == 3
    chunk_words = {w.lower().rstrip(".") for w in re.findall(r"[\w.-]+", chunk.text)}
    for question in questions:
        assert WELL_FORMED.match(question), question
        asked = {w.lower().rstrip(".") for w in re.findall(r"[\w.-]+", question[:-1])}
        assert asked - {
            "what",
            "is",
            "are",
            "does",
            "do",
            "how",
            "i",
            "the",
            "a",
            "an",
            "should",
            "know",
            "about",
            "say",
            "documentation",
            "work",
            "to",
            "role",
            "play",
            "described",
            "text",
            "known",
            "related",
            "and",
            "have",
            "with",
        } <= (chunk_words | {"do", "serialize", "control", "know"}), question


def test_same_chunk_same_questions() -> None:
    generator = OfflineQuestionGenerator()
    first = asyncio.run(generator.generate(BOUNDARY, 3))
    second = asyncio.run(OfflineQuestionGenerator().generate(BOUNDARY, 3))
    assert first == second


def test_count_is_an_upper_bound_and_the_order_is_stable() -> None:
    three = _questions(EVEREST, 3)
    assert _questions(EVEREST, 1) == three[:1]
    assert _questions(EVEREST, 2) == three[:2]
    assert _questions(EVEREST, 0) == []


def test_reports_one_offline_call_and_no_tokens() -> None:
    result = asyncio.run(OfflineQuestionGenerator().generate(EVEREST, 2))
    assert (result.chunk_id, result.llm_calls, result.tokens_used, result.retries) == (
        "everest",
        1,
        0,
        0,
    )


@pytest.mark.parametrize("text", ["", "   ", "Short text here.", "See above. Yes.", "1 2 3 4 5"])
def test_too_short_chunks_give_no_question(text: str) -> None:
    assert _questions(Chunk(id="short", text=text), 3) == []


def test_a_chunk_with_little_to_say_gives_fewer_questions_than_asked() -> None:
    chunk = Chunk(id="one", text="Photosynthesis converts light energy into chemical energy.")
    questions = _questions(chunk, 10)
    assert 1 <= len(questions) < 10


def test_over_the_stdlib_corpus_every_question_is_valid_and_chunks_get_questions() -> None:
    generator = OfflineQuestionGenerator()
    docs = list(iter_stdlib_docs(limit=300))
    empty = 0
    for doc in docs:
        chunk = Chunk(id=doc.id, text=chunk_text(doc.text)[0], metadata={"title": doc.title})
        questions = generator.questions(chunk, 3)
        # What the run store will accept for this chunk.
        ChunkQuestions(chunk_id=chunk.id, questions=questions)
        assert len(questions) == len({q.lower() for q in questions}), questions
        for question in questions:
            assert WELL_FORMED.match(question), (doc.id, question)
            assert not re.search(r"\b(here are|question)\b", question, re.IGNORECASE)
        empty += not questions
    assert len(docs) == 300
    assert empty == 0  # every stdlib docstring has at least 20 words and a title


def test_key_phrases_keep_their_article_case_and_number() -> None:
    questions = _questions(BOUNDARY, 4)
    assert "What is the boundary layer?" in questions
    # A proper noun mid-sentence keeps its capital, and its article.
    assert "the Prandtl number" in questions[1]
    assert any("critical Reynolds number" in q for q in questions)
    chunk = Chunk(
        id="plural",
        text="Parsers read the configuration. Configuration files hold named sections, "
        "and named sections hold options with values.",
    )
    questions = _questions(chunk, 5)
    assert any(" are named sections" in q or "What are " in q for q in questions), questions
    assert not any(re.search(r"\bis (named sections|configuration files)\b", q) for q in questions)


# Every form the generator asks in, most specific first; `s` is the span of the chunk asked of.
FORMS = [
    re.compile(p)
    for p in (
        r"^What does the (?P<t>.+) documentation say about (?P<s>.+)\?$",
        r"^How (?:is|are) (?P<s>.+) related to (?P<q>.+)\?$",
        r"^What is known about (?P<s>.+) and (?P<q>.+)\?$",
        r"^What does (?P<s>.+) have to do with (?P<q>.+)\?$",
        r"^What should I know about (?P<s>.+)\?$",
        r"^How is (?P<s>.+) described\?$",
        r"^What role does (?P<s>.+) play\?$",
        r"^What does the text say about (?P<s>.+)\?$",
        r"^What is known about (?P<s>.+)\?$",
        r"^How do I (?P<s>.+)\?$",
        r"^What (?:is|are) (?P<s>.+)\?$",
        r"^What does (?P<s>.+) \w+\?$",
    )
]


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def _unpunctuated(text: str) -> str:
    """The text as some corpora are: lower-case, no sentence punctuation at all."""
    return " ".join(re.sub(r"[.!?;:,]", " ", text).lower().split())


def _stdlib_chunks(limit: int = 300) -> list[Chunk]:
    return [
        Chunk(id=doc.id, text=chunk_text(doc.text)[0], metadata={"title": doc.title})
        for doc in iter_stdlib_docs(limit=limit)
    ]


def _assert_spans_in_chunk(chunk: Chunk, questions: list[str]) -> None:
    text = _words(chunk.text)
    for question in questions:
        form = next((f.match(question) for f in FORMS if f.match(question)), None)
        assert form is not None, f"an unknown form: {question}"
        spans = [form.group("s"), *([form.group("q")] if "q" in form.groupdict() else [])]
        for span in spans:
            assert _words(span) in text, (chunk.id, question, span)


def test_every_question_asks_about_a_span_of_its_chunk_punctuated_or_not() -> None:
    generator = OfflineQuestionGenerator()
    for chunk in _stdlib_chunks():
        for variant in (chunk, chunk.model_copy(update={"text": _unpunctuated(chunk.text)})):
            _assert_spans_in_chunk(variant, generator.questions(variant, 5))


def test_a_metadata_title_the_text_does_not_repeat_is_not_asked_about() -> None:
    chunk = BOUNDARY.model_copy(update={"metadata": {"title": "Convection notes"}})
    assert not any("onvection" in q for q in _questions(chunk, 5))


def test_text_without_sentence_punctuation_gives_the_number_asked() -> None:
    generator = OfflineQuestionGenerator()
    chunks = [c for c in _stdlib_chunks() if len(c.text.split()) >= 40]
    assert len(chunks) > 100
    punctuated = [len(generator.questions(c, 3)) for c in chunks]
    bare = [
        len(generator.questions(c.model_copy(update={"text": _unpunctuated(c.text)}), 3))
        for c in chunks
    ]
    assert sum(bare) / len(bare) >= 2.9 and sum(punctuated) / len(punctuated) >= 2.9
    # One long run of lower-case words, no boundary anywhere, still gives what was asked.
    run_on = " ".join(_unpunctuated(c.text) for c in chunks[:3])
    assert len(generator.questions(Chunk(id="run-on", text=run_on), 5)) == 5


def test_forms_vary_and_follow_the_seed() -> None:
    chunks = _stdlib_chunks(200)
    asked = [q for c in chunks for q in OfflineQuestionGenerator().questions(c, 3)]
    used = {next(i for i, f in enumerate(FORMS) if f.match(q)) for q in asked}
    assert len(used) >= 6  # not one template for everything
    again = [q for c in chunks for q in OfflineQuestionGenerator().questions(c, 3)]
    other = [q for c in chunks for q in OfflineQuestionGenerator(seed=1).questions(c, 3)]
    assert asked == again and asked != other
