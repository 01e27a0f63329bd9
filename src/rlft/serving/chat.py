"""Chat messages -> the prompt text the model continues."""

from __future__ import annotations

from typing import Any

from rlft.serving.host import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant")
NO_TEMPLATE_WARNING = (
    "The model has no chat template, so this prompt was built as 'role: content' lines ending in "
    "'assistant:', a format the model may never have seen; for such a model send your own prompt "
    "text to /v1/completions."
)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether chat messages are formatted by the tokenizer's own template (else: role lines)."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt for ``messages`` (``[{"role": ..., "content": ...}, ...]``), ending where the
    assistant's answer starts.

    With a chat template: ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.
    Without one: one ``"role: content"`` line per message, then ``"assistant:"``. ``developer``
    (OpenAI's newer name for ``system``) is passed to templates as ``system``.
    Content is a string or a list of ``{"type": "text", "text": ...}`` parts (joined).
    Raises :class:`InvalidRequestError` for no messages, an unknown role or non-text content.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages is empty; send at least one {role: user, content: ...}.")
    cleaned = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = _text(message.get("content") if isinstance(message, dict) else None, i)
        if role not in ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role is {role!r}; use one of {', '.join(ROLES)}."
            )
        cleaned.append({"role": "system" if role == "developer" else role, "content": content})
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(cleaned, add_generation_prompt=True, tokenize=False)
        return str(text)
    return "".join(f"{m['role']}: {m['content']}\n" for m in cleaned) + "assistant:"


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise InvalidRequestError(
        f"messages[{index}].content must be text (a string or a list of {{type: text, text}} parts)."
    )
