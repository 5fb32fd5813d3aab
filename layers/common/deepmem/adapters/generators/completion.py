"""Reading a chat completion (its JSON body) from an OpenAI-compatible endpoint without trusting
its shape: the answer's text and the tokens it cost."""

from __future__ import annotations

from typing import Any


def content_of(completion: Any) -> str | None:
    """The first choice's message text; None when the completion has none."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def total_tokens(completion: Any) -> int:
    """Tokens the call cost: the usage's total, else prompt + completion tokens, else 0."""
    usage = completion.get("usage") if isinstance(completion, dict) else None
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    prompt = usage.get("prompt_tokens")
    answer = usage.get("completion_tokens")
    return sum(n for n in (prompt, answer) if isinstance(n, int) and not isinstance(n, bool))
