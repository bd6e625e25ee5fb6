"""Chat: a conversation rendered into one prompt by the model's chat template.

A chat model is still a next-token predictor: the template lays the system prompt and the
turns out as text (with the model's turn markers), ends with the opening of an assistant
turn, and generation continues from there until an end-of-turn token.

Templates are Jinja, as in Hugging Face checkpoints and GGUF metadata; they are rendered
in Jinja's sandbox, since a template comes from a downloaded file.
"""

from __future__ import annotations

from typing import Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..tokenizers.special import KNOWN_SPECIAL_TOKENS
from . import prompts

# For checkpoints without a template: plain text turns the model can learn from anywhere.
DEFAULT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
DEFAULT_STOP = ("\n\nUser:",)  # where the default template's next turn would begin
ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """[{"role": ..., "content": ...}, ...] with known roles and string content, or a clear error."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must have 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_chat(messages: Sequence[dict], template: str | None = None, add_generation_prompt: bool = True,
                **variables) -> str:
    """The prompt text for ``messages`` under ``template`` (None: ``DEFAULT_TEMPLATE``)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(template or DEFAULT_TEMPLATE).render(
        messages=check_messages(messages), add_generation_prompt=add_generation_prompt, **variables)


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """Ids of every end-of-sequence / end-of-turn special the tokenizer has ("<|im_end|>",
    "</s>", "<|endoftext|>" ...): a chat reply ends at whichever the model emits."""
    ids = [tokenizer.token_to_id(name) for name in KNOWN_SPECIAL_TOKENS["eos"]]
    return tuple(sorted({i for i in ids if i is not None}))


def chat_stops(tokenizer, template: str | None, cfg) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(stop strings, stop token ids) of a chat reply: where the default template's next turn
    would begin (a checkpoint's own template ends turns with tokens instead), every end-of-turn
    token, and where ``cfg``'s family ends an output. Stop strings go through the one matcher
    (``stops.StopStrings``), in ``generate`` and in the server alike."""
    ids = set(end_of_turn_ids(tokenizer)) | set(prompts.stop_ids(cfg, tokenizer))
    return (() if template else DEFAULT_STOP), tuple(sorted(ids))
