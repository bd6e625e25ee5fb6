import pytest

from tfamily.generation.chat import render_chat
from tfamily.generation.fewshot import Example, fewshot_messages, fewshot_prompt, fewshot_stop, parse_example
from tfamily.generation.text import cut_at_stop

EXAMPLES = [("cheese", "fromage"), {"input": "bread", "output": "pain"}]


def test_prompt_lays_out_instruction_examples_and_an_open_query():
    p = fewshot_prompt("sea otter", EXAMPLES, "Translate English to French.")
    assert p == ("Translate English to French.\n\nInput: cheese\nOutput: fromage\n\n"
                 "Input: bread\nOutput: pain\n\nInput: sea otter\nOutput:")
    assert fewshot_prompt("x") == "Input: x\nOutput:"  # zero-shot: no instruction, no examples
    assert fewshot_prompt("x", [Example("a", "b")], input_label="Q:", output_label="A:") == "Q: a\nA: b\n\nQ: x\nA:"


def test_stop_cuts_an_invented_next_example():
    assert cut_at_stop(" loutre de mer\n\nInput: dog\nOutput: chien", fewshot_stop()) == " loutre de mer"


def test_messages_are_turns_under_the_chat_template():
    m = fewshot_messages("sea otter", EXAMPLES, "Translate.")
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert render_chat(m).endswith("User: sea otter\n\nAssistant:")


@pytest.mark.parametrize("bad", [[("only one",)], [{"input": "a"}], [3]])
def test_bad_examples_name_the_index(bad):
    with pytest.raises(ValueError, match=r"examples\[0\]"):
        fewshot_prompt("q", bad)


def test_parse_example_from_the_command_line():
    assert parse_example("cheese => fromage") == Example("cheese", "fromage")
    with pytest.raises(ValueError, match="input => output"):
        parse_example("no separator")
