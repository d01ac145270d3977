"""Whether a chat job fits its model profile's `context_tokens`, judged before any call.

The prompt's tokens are estimated without the model's tokenizer (there is one per model, and
loading it would cost more than the check saves):

- text: one token per CHARS_PER_TOKEN characters, rounded up, over every text the model reads:
  string content, `text` parts, a message's `name`, an assistant's tool calls (name and
  arguments) and the `tools` definitions as their JSON;
- MESSAGE_OVERHEAD tokens per message, for the role and the chat template's markers;
- IMAGE_TOKENS per `image_url` part, what a low-detail image costs OpenAI, the least an image
  costs: a larger one is counted low.

Four characters a token is right for English prose and low for code and most other languages,
so the estimate refuses late rather than early: a prompt that may fit is sent, and one the server
then finds too long fails with the same category from the server's own answer. The answer's
budget is `max_completion_tokens`, else `max_tokens` (as vLLM reads them), else nothing: a
request without one reserves no room for its answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 85


def prompt_tokens(request: Mapping[str, Any]) -> int:
    """The estimated prompt tokens of a chat input: `messages`, or llm_chat's `system`/`user`."""
    messages = request.get("messages")
    if messages is None:
        messages = [{"content": request[key]} for key in ("system", "user") if key in request]
    chars, tokens = 0, 0
    for message in messages:
        tokens += MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "image_url":
                tokens += IMAGE_TOKENS
            else:
                chars += len(part.get("text", ""))
        chars += len(message.get("name", ""))
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            chars += len(function.get("name", "")) + len(function.get("arguments", ""))
    if request.get("tools"):
        chars += len(json.dumps(request["tools"]))
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


def answer_budget(request: Mapping[str, Any]) -> int:
    return request.get("max_completion_tokens") or request.get("max_tokens") or 0


def overflow(request: Mapping[str, Any], context_tokens: int | None) -> str | None:
    """Why the request cannot fit `context_tokens`, or None when it may (or no limit is set)."""
    if context_tokens is None:
        return None
    prompt, budget = prompt_tokens(request), answer_budget(request)
    if prompt + budget <= context_tokens:
        return None
    asked = f"about {prompt} prompt tokens (estimated)"
    if budget:
        asked += f" plus {budget} for the answer (max_tokens)"
    return f"{asked} exceed the model profile's context_tokens {context_tokens}"
