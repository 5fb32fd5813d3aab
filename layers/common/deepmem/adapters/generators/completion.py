"""Reading a chat completion from an OpenAI-compatible endpoint without trusting its shape:
the answer's text and the tokens it cost."""

from __future__ import annotations

from typing import Any


def content_of(completion: Any) -> str | None:
    """The first choice's message text; None when the completion has none."""
    choices = getattr(completion, "choices", None)
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else None


def total_tokens(completion: Any) -> int:
    """Tokens the call cost: the usage's total, else prompt + completion tokens, else 0."""
    usage = getattr(completion, "usage", None)
    if usage is None:
        return 0
    total = getattr(usage, "total_tokens", None)
    if isinstance(total, int):
        return total
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    answer = getattr(usage, "completion_tokens", 0) or 0
    return int(prompt) + int(answer)
