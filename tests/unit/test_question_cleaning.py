"""Questions are cleaned of what no store can hold before any generator's answer is written."""

from __future__ import annotations

import json

import pytest
from deepmem.domain.questions import clean_questions, normalize_question, strip_control_characters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What is\x00 the boundary layer?", "What is the boundary layer?"),
        ("\x00What\x07 drives\x1b vortex shedding\x7f?", "What drives vortex shedding?"),
        ("Why does\u0085 the\x9f nozzle choke?", "Why does the nozzle choke?"),
        # A lone surrogate (JSON "\ud800") cannot be encoded as UTF-8: dropped.
        (json.loads('"How does the \\ud800inlet start?"'), "How does the inlet start?"),
        ("What is the \ufdd0shock angle?", "What is the shock angle?"),
    ],
)
def test_control_characters_and_unencodable_code_points_are_removed(
    raw: str, expected: str
) -> None:
    cleaned = normalize_question(raw)
    assert cleaned == expected
    cleaned.encode("utf-8")  # encodable: no surrogate left


def test_letters_of_every_script_and_emoji_are_kept() -> None:
    text = "Qu'est-ce que la couche limite, Ωμέγα, 境界層 😀?"
    assert strip_control_characters(text) == text
    assert normalize_question(text) == text


def test_a_question_of_control_characters_only_is_rejected() -> None:
    assert clean_questions(["\x00\x01\x02", "What is a \x00 shock wave?"], 3) == (
        ["What is a shock wave?"],
        1,
    )
