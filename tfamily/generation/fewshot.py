"""Few-shot prompts: an instruction, k worked examples, then the query.

A base model continues text, so the examples teach the format by showing it:

    Translate English to French.          <- instruction

    Input: cheese                         <- example 1
    Output: fromage

    Input: sea otter                      <- the query, left open for the model
    Output:

A chat model gets the same content as turns instead: the instruction as the system
prompt, each example as a user turn answered by an assistant turn, then the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Example:
    input: str
    output: str


def check_examples(examples: Sequence) -> list[Example]:
    """Examples as Example, (input, output) pairs or {"input", "output"} dicts; a clear error otherwise."""
    out = []
    for i, e in enumerate(examples):
        if isinstance(e, Example):
            out.append(e)
        elif isinstance(e, dict) and isinstance(e.get("input"), str) and isinstance(e.get("output"), str):
            out.append(Example(e["input"], e["output"]))
        elif isinstance(e, (tuple, list)) and len(e) == 2 and all(isinstance(x, str) for x in e):
            out.append(Example(e[0], e[1]))
        else:
            raise ValueError(f"examples[{i}] must have string 'input' and 'output'")
    return out


def fewshot_prompt(query: str, examples: Sequence = (), instruction: str = "",
                   input_label: str = "Input:", output_label: str = "Output:") -> str:
    """One text prompt for a base model; it ends with ``output_label`` so the model answers.

    Stop generation at ``fewshot_stop(input_label)`` so the model does not go on to invent
    the next example."""
    blocks = [instruction.strip()] if instruction.strip() else []
    for e in check_examples(examples):
        blocks.append(f"{input_label} {e.input}\n{output_label} {e.output}")
    blocks.append(f"{input_label} {query}\n{output_label}")
    return "\n\n".join(blocks)


def fewshot_stop(input_label: str = "Input:") -> tuple[str, ...]:
    """Where the next, invented example would begin."""
    return (f"\n\n{input_label}", f"\n{input_label}")


def fewshot_messages(query: str, examples: Sequence = (), instruction: str = "") -> list[dict]:
    """The same few-shot prompt as chat turns (system, then user/assistant pairs, then the query)."""
    messages = [{"role": "system", "content": instruction}] if instruction else []
    for e in check_examples(examples):
        messages += [{"role": "user", "content": e.input}, {"role": "assistant", "content": e.output}]
    messages.append({"role": "user", "content": query})
    return messages


def parse_example(text: str, sep: str = "=>") -> Example:
    """'input => output' (from the command line) -> Example."""
    if sep not in text:
        raise ValueError(f"an example must look like 'input {sep} output'; got {text!r}")
    left, right = text.split(sep, 1)
    return Example(left.strip(), right.strip())
