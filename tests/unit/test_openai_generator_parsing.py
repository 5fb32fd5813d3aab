"""The pure parts of the OpenAI question generator: parsing, cleaning, backoff, Retry-After."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest
from deepmem.adapters.generators.openai import backoff_delay, parse_candidates, parse_retry_after
from deepmem.domain.questions import MAX_QUESTION_CHARS, clean_questions, normalize_question


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What is  vacuum\n in Postgres", "What is vacuum in Postgres?"),
        ("  How does X work??  ", "How does X work?"),
        ("1. What is a pod?", "What is a pod?"),
        ("2) What is a node?", "What is a node?"),
        ("- What is a lane?", "What is a lane?"),
        ("* **Why use jitter?**", "Why use jitter?"),
        ("Q3: Who wrote it?", "Who wrote it?"),
        ("Question 2: Who wrote it?", "Who wrote it?"),
        ('"What is RLS?"', "What is RLS?"),
        ("What is RLS.", "What is RLS?"),
    ],
)
def test_normalize_strips_prefixes_and_ends_with_one_question_mark(raw: str, expected: str) -> None:
    assert normalize_question(raw) == expected


@pytest.mark.parametrize(
    "meta",
    [
        "Here are three questions:",
        "Here is a question about the chunk",
        "Sure! Here you go",
        "Certainly, these are the questions",
        "Questions:",
        "The following questions are answered:",
        "```json",
        "",
        "   ",
        "1.",
    ],
)
def test_meta_lines_and_empty_lines_are_rejected(meta: str) -> None:
    assert clean_questions([meta], 3) == ([], 1)


@pytest.mark.parametrize(
    "question",
    [
        "According to the text, what is vacuum?",
        "What does the passage say about vacuum?",
        "Based on the context above, what is RLS?",
        "What does the author think of Postgres?",
        "Why?",  # a single word is not a search query
        "?!?",
    ],
)
def test_questions_that_lean_on_the_passage_or_say_nothing_are_rejected(question: str) -> None:
    assert clean_questions([question], 3)[0] == []


def test_over_long_questions_are_rejected_and_the_limit_is_inclusive() -> None:
    at_limit = "What " + "x" * (MAX_QUESTION_CHARS - 6) + "?"
    assert len(at_limit) == MAX_QUESTION_CHARS
    assert clean_questions([at_limit], 3)[0] == [at_limit]
    too_long = "What " + "x" * MAX_QUESTION_CHARS + "?"
    assert clean_questions([too_long], 3) == ([], 1)
    assert clean_questions(["What is a pod?"], 3, max_chars=10) == ([], 1)


def test_dedupe_is_case_insensitive_and_keeps_the_first_spelling() -> None:
    questions, rejected = clean_questions(
        ["What is a Pod?", "what is a pod", "WHAT IS A POD??", "What is a node?"], 5
    )
    assert questions == ["What is a Pod?", "What is a node?"]
    assert rejected == 2


def test_at_most_count_questions_are_kept_in_order() -> None:
    raw = [f"What is item {i}?" for i in range(6)]
    assert clean_questions(raw, 3)[0] == raw[:3]


def test_non_strings_are_rejected_not_fatal() -> None:
    assert clean_questions([None, 3, "What is a pod?"], 3) == (["What is a pod?"], 2)


def test_parse_well_formed_json_object_and_bare_list() -> None:
    assert parse_candidates(json.dumps({"questions": ["What is a?", "Why b?"]})) == (
        ["What is a?", "Why b?"],
        True,
    )
    assert parse_candidates('["What is a?"]') == (["What is a?"], True)
    assert parse_candidates('```json\n{"questions": ["What is a?"]}\n```') == (
        ["What is a?"],
        True,
    )


def test_parse_truncated_json_unescapes_string_literals() -> None:
    content = '{"questions": ["What is \\"RLS\\" in Postgres?", "Why use policies?", "How'
    candidates, well_formed = parse_candidates(content)
    assert not well_formed
    assert candidates == ['What is "RLS" in Postgres?', "Why use policies?"]


def test_parse_falls_back_to_question_lines() -> None:
    content = "Here are three questions:\n1. What is a pod?\n2. What is a node?\nThanks."
    candidates, well_formed = parse_candidates(content)
    assert not well_formed
    assert candidates == ["1. What is a pod?", "2. What is a node?"]
    assert clean_questions(candidates, 3)[0] == ["What is a pod?", "What is a node?"]


@pytest.mark.parametrize("content", [None, "", "{{{ not json", '{"questions": 3}', "Sorry."])
def test_parse_of_unusable_answers_gives_no_candidates(content: str | None) -> None:
    candidates, well_formed = parse_candidates(content)
    assert candidates == []
    assert not well_formed


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert backoff_delay(0, 0.5, 30, rng=lambda: 0.999) == pytest.approx(0.4995)
    assert backoff_delay(3, 0.5, 30, rng=lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 30, rng=lambda: 1.0) == 30.0
    assert backoff_delay(10, 0.5, 30, rng=lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
