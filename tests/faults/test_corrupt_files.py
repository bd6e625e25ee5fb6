"""Corrupt input files: every file a user hands in, broken, gives exit code 2 and ONE line on
stderr that names the file and the fault, with no traceback, for every command that reads it.

The walks run the real CLI (``main([...])``) for each command that takes a checkpoint or a
file: the weights truncated, their length prefix or header bit-flipped, a tensor of the wrong
shape or an integer dtype; config.json / tokenizer.json that are not JSON or have a wrong
field; YAML run configs; GGUF files (truncated, bad magic, a tensor type that cannot be
dequantised); Hugging Face folders (a missing shard, an index pointing outside the folder);
and checkpoints of a family the command cannot use. Tiny checkpoints are made once per module.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from fault_helpers import record, trials
from tfamily.checkpoint import save_checkpoint
from tfamily.cli import main
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version
from tfamily.tokenizers import Tokenizer

TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n\n"
        "all that glitters is not gold. to be or not to be, that is the question.\n") * 8
TINY_RUN = ["--preset", "gpt-tiny", "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2",
            "--tokenizer", "char", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "1", "--warmup", "1",
            "--no-progress", "--threads", "1"]


# ---- tiny checkpoints, made once ------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """{'run': a tiny trained GPT run folder (checkpoint/ + data/), 'gpt': its checkpoint,
    'bert', 't5', 'classifier': save_checkpoint on tiny presets, 'text', 'tsv': input files}."""
    root = tmp_path_factory.mktemp("corrupt_base")
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    run = root / "run"
    assert main(["train", "--data", str(text), "--out", str(run), "--steps", "1", "--eval-interval", "1",
                 *TINY_RUN]) == 0
    made = {"run": run, "gpt": run / "checkpoint", "text": text}
    char = Tokenizer.train("char", [TEXT])
    wordpiece = Tokenizer.train("wordpiece", [TEXT], vocab_size=80)
    for name, preset, tok, changes in (("bert", "bert-tiny", wordpiece, {}), ("t5", "t5-tiny", char, {}),
                                       ("classifier", "bert-tiny", wordpiece, {"head": "sequence_classification"})):
        torch.manual_seed(0)
        cfg = tiny_version(get_preset(preset).config()).replace(vocab_size=tok.vocab_size, **changes)
        made[name] = save_checkpoint(root / name, build_model(cfg), cfg, tok.to_str())
    tsv = root / "labels.tsv"
    tsv.write_text("".join(f"{'pos' if i % 2 else 'neg'}\t{w} example {i}\n"
                           for i, w in enumerate(["good", "bad"] * 5)), encoding="utf-8")
    made["tsv"] = tsv
    return made


# ---- the commands that read a checkpoint ------------------------------------------------------
# name -> (family of checkpoint it is given, argv from (checkpoint, scratch folder, base files)).
# train --resume is given the run folder; its checkpoint is <run>/checkpoint.

COMMANDS = {
    "generate": ("gpt", lambda c, t, b: ["generate", c, "--max-tokens", "2", "--prompt", "the"]),
    "chat": ("gpt", lambda c, t, b: ["chat", c, "--message", "hi", "--max-tokens", "2"]),
    "eval": ("gpt", lambda c, t, b: ["eval", c, "--data", str(b["text"])]),
    "translate": ("t5", lambda c, t, b: ["translate", c, "hello", "--beam", "1"]),
    "finetune --init": ("bert", lambda c, t, b: ["finetune", c, "--train", str(b["tsv"]), "--val", str(b["tsv"]),
                                                 "--out", str(t / "ft"), "--epochs", "1", "--no-progress"]),
    "knn": ("bert", lambda c, t, b: ["knn", c, "--train", str(b["tsv"]), "--test", str(b["tsv"]), "--k", "1"]),
    "embed": ("bert", lambda c, t, b: ["embed", c, "hello"]),
    "inspect": ("gpt", lambda c, t, b: ["inspect", c]),
    "export-hf": ("gpt", lambda c, t, b: ["export-hf", c, str(t / "hf")]),
    "fewshot": ("gpt", lambda c, t, b: ["fewshot", c, "--example", "a => b", "--query", "c", "--max-tokens", "2"]),
    "infill": ("gpt", lambda c, t, b: ["infill", c, "a [MASK] b", "--max-tokens", "2"]),
    "train --init": ("gpt", lambda c, t, b: ["train", "--init", c, "--data", str(b["text"]), "--out", str(t / "ft"),
                                             "--steps", "1", "--no-progress", "--threads", "1"]),
    "train --resume": ("run", lambda c, t, b: ["train", "--out", c, "--resume", "--steps", "2", "--no-progress"]),
    "serve": ("gpt", lambda c, t, b: ["serve", c, "--port", "0", "--threads", "1"]),
}
READS_TOKENIZER = [c for c in COMMANDS if c != "inspect"]  # inspect reads config.json and the weights' header


def one_line_problem(command: str, rc: int, err: str, *names: str) -> str | None:
    """None when the command failed as it should: exit 2, one stderr line naming a file (any
    of ``names``), no traceback; else what was wrong."""
    lines = err.strip().splitlines()
    if rc != 2:
        return f"exit {rc}"
    if "Traceback" in err:
        return "a traceback"
    if len(lines) != 1:
        return f"{len(lines)} lines: {err.strip()[:300]!r}"
    if not any(n in lines[0] for n in names):
        return f"names none of {names}: {lines[0]!r}"
    return None


def run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def walk(capsys, tmp_path, base, corrupt, commands, names) -> tuple[list[str], list[str]]:
    """Run every command on a corrupted copy of its checkpoint; (failures, example error lines)."""
    failures, examples = [], []
    for command in commands:
        family, argv = COMMANDS[command]
        scratch = tmp_path / command.replace(" ", "_").replace("-", "")
        scratch.mkdir()
        source = base[family]
        target = scratch / source.name
        shutil.copytree(source, target)
        ckpt = target / "checkpoint" if family == "run" else target
        corrupt(ckpt)
        rc, err = run(capsys, argv(str(target), scratch, base))
        problem = one_line_problem(command, rc, err, *[str(ckpt / n) for n in names])
        if problem:
            failures.append(f"{command}: {problem}")
        else:
            examples.append(err.strip().splitlines()[-1])
    return failures, examples


def outcome(failures: list[str], n: int, commands=()) -> str:
    return (f"exit 2, one line naming the file, {n}/{n} commands" if not failures
            else f"FAILED {len(failures)}/{n}: " + "; ".join(failures)[:500])


# ---- weights ----------------------------------------------------------------------------------

def truncate(ckpt: Path, keep: int | None = None) -> None:
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: keep if keep is not None else len(data) - 1000])


def corrupt_length_prefix(ckpt: Path) -> None:
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[5] ^= 0x40  # a bit high in the u64 header length: a header far longer than the file
    f.write_bytes(bytes(data))


def flip_header_byte(ckpt: Path, at: int = 8 + 40, bit: int = 0x01) -> None:
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[at] ^= bit
    f.write_bytes(bytes(data))


def resave(ckpt: Path, convert) -> None:
    f = ckpt / "model.safetensors"
    tensors = safetensors.torch.load_file(str(f))
    safetensors.torch.save_file({k: convert(v) for k, v in tensors.items()}, str(f), metadata={"format": "pt"})


def change_config(ckpt: Path, **fields) -> None:
    f = ckpt / "config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), **fields}), encoding="utf-8")


WEIGHT_FAULTS = {
    "truncated": truncate,
    "cut inside the header": lambda c: truncate(c, 20),
    "length prefix corrupted": corrupt_length_prefix,
    "a bit flipped in the JSON header": lambda c: flip_header_byte(c, 8, 0x02),  # '{' becomes 'y'
    "integer dtype (int32)": lambda c: resave(c, lambda t: t.to(torch.int32)),
}


@pytest.mark.parametrize("fault", list(WEIGHT_FAULTS))
def test_corrupt_weights_every_command(fault, base, tmp_path, capsys):
    failures, examples = walk(capsys, tmp_path, base, WEIGHT_FAULTS[fault], list(COMMANDS), ["model.safetensors"])
    record(f"corrupt weights: {fault}", len(COMMANDS), outcome(failures, len(COMMANDS), COMMANDS))
    assert not failures, failures
    print(examples[0])


def test_config_disagreeing_with_the_weights_every_command(base, tmp_path, capsys):
    """config.json's d_model no longer matches the weights (32 wide): one line naming config.json,
    the field and a tensor with both shapes."""
    def widen(ckpt: Path) -> None:
        change_config(ckpt, d_model=json.loads((ckpt / "config.json").read_text())["d_model"] + 16)
    failures, examples = walk(capsys, tmp_path, base, widen, list(COMMANDS), ["config.json"])
    record("corrupt weights: wrong shape (config.json's d_model disagrees)", len(COMMANDS),
           outcome(failures, len(COMMANDS), COMMANDS))
    assert not failures, failures
    assert all("d_model=" in e and "disagrees with the weights" in e for e in examples), examples
    print(examples[0])


def test_every_single_bit_flip_in_the_header_is_refused_or_harmless(base, tmp_path, capsys):
    """Flip one bit at each of the first bytes of the header (after the 8-byte length): each
    flip is refused with one line naming the file, except where it lands inside the text of the
    free-form __metadata__ (safetensors' note of the tied names it stored once), which no
    loader reads: the weights are unchanged, and they load."""
    header_len = int.from_bytes((base["gpt"] / "model.safetensors").read_bytes()[:8], "little")
    header = (base["gpt"] / "model.safetensors").read_bytes()[8:8 + header_len]
    meta = json.dumps(json.loads(header).get("__metadata__", {}), separators=(",", ":")).encode()
    meta_at = header.find(meta[1:-1])  # the metadata's key/value text, inside its braces
    harmless = range(meta_at, meta_at + len(meta) - 2) if meta_at >= 0 else range(0)
    positions = list(range(0, min(100, header_len), 1 if trials(0, 1) else 3))
    refused, ignored, bad = 0, 0, []
    for i, at in enumerate(positions):
        ckpt = tmp_path / f"flip{i}"
        shutil.copytree(base["gpt"], ckpt)
        flip_header_byte(ckpt, 8 + at, 1 << (i % 7))
        rc, err = run(capsys, ["generate", str(ckpt), "--max-tokens", "1", "--prompt", "a"])
        problem = one_line_problem("generate", rc, err, str(ckpt / "model.safetensors"))
        if problem is None:
            refused += 1
        elif rc == 0 and at in harmless:
            ignored += 1
        else:
            bad.append(f"byte {at}: {problem}")
    record("corrupt weights: one bit flipped in the safetensors header", len(positions),
           f"{refused} refused with one line naming the file, {ignored} inside __metadata__ (harmless, loads)"
           + (f"; FAILED: {bad[:3]}" if bad else ""))
    assert not bad, bad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_float_weights_of_another_precision_are_converted(dtype, base, tmp_path, capsys):
    """float64 / float16 / bfloat16 weights load, converted to the model's float32: greedy
    generation runs, and from float64 it is exactly that of the float32 file."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base["gpt"], ckpt)
    resave(ckpt, lambda t: t.to(dtype))
    argv = ["--max-tokens", "5", "--prompt", "the", "--temperature", "0", "--json"]
    rc, want, _ = run_out(capsys, ["generate", str(base["gpt"]), *argv])
    assert rc == 0
    rc, got, err = run_out(capsys, ["generate", str(ckpt), *argv])
    assert rc == 0, err
    if dtype == torch.float64:
        assert json.loads(got)[0]["text"] == json.loads(want)[0]["text"]
    record(f"weights stored as {str(dtype).removeprefix('torch.')}", 1, "accepted, converted to float32")


def run_out(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_serve_reports_a_broken_checkpoint_in_one_line(base, tmp_path, capsys):
    """`tfamily serve` on a broken checkpoint: exit 2, the error in one line naming the file
    (the 'serving ... on http://...' banner comes only once the model has loaded)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base["gpt"], ckpt)
    truncate(ckpt)
    rc, err = run(capsys, ["serve", str(ckpt), "--port", "0", "--threads", "1"])
    assert one_line_problem("serve", rc, err, str(ckpt / "model.safetensors")) is None
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("tfamily serve: error: ") and "truncated" in errors[0]


# ---- config.json and tokenizer.json -------------------------------------------------------------

def write(name: str, text: str | bytes):
    def corrupt(ckpt: Path) -> None:
        f = ckpt / name
        f.write_bytes(text) if isinstance(text, bytes) else f.write_text(text, encoding="utf-8")
    return corrupt


CONFIG_FAULTS = {
    "garbage (not JSON)": write("config.json", "{\"arch\": \"decoder\", \"d_model\": 3"),
    "binary (not UTF-8)": write("config.json", bytes(range(256))),
    "valid JSON, not an object": write("config.json", "[1, 2, 3]"),
    "unknown field": lambda c: change_config(c, n_layers=2),
    "wrong type": lambda c: change_config(c, d_model="32"),
    "bad value (n_head does not divide d_model)": lambda c: change_config(c, n_head=5),
}
CONFIG_MESSAGES = {"unknown field": "unknown config field(s): n_layers (did you mean n_layer?)",
                   "wrong type": "d_model must be int", "bad value (n_head does not divide d_model)": "n_head (5)"}


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_corrupt_config_every_command(fault, base, tmp_path, capsys):
    failures, examples = walk(capsys, tmp_path, base, CONFIG_FAULTS[fault], list(COMMANDS), ["config.json"])
    record(f"corrupt config.json: {fault}", len(COMMANDS), outcome(failures, len(COMMANDS), COMMANDS))
    assert not failures, failures
    if fault in CONFIG_MESSAGES:
        assert all(CONFIG_MESSAGES[fault] in e for e in examples), examples
    print(examples[0])


def foreign_tokenizer(ckpt: Path) -> None:
    """tokenizer.json of another model, with more ids than this one's embedding has rows."""
    cfg = json.loads((ckpt / "config.json").read_text())
    big = Tokenizer.train("word", [TEXT + " ".join(f"w{i}" for i in range(300))], vocab_size=cfg["vocab_size"] + 50)
    big.save(ckpt / "tokenizer.json")


TOKENIZER_FAULTS = {
    "garbage (not JSON)": write("tokenizer.json", "{\"version\": \"1.0\", \"model\": {"),
    "no model object": write("tokenizer.json", json.dumps({"version": "1.0", "added_tokens": []})),
    "wrong field type": write("tokenizer.json", json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": 5,
                                                                                      "merges": "none"}})),
    "ids beyond the embedding": foreign_tokenizer,
}


@pytest.mark.parametrize("fault", list(TOKENIZER_FAULTS))
def test_corrupt_tokenizer_every_command(fault, base, tmp_path, capsys):
    failures, examples = walk(capsys, tmp_path, base, TOKENIZER_FAULTS[fault], READS_TOKENIZER, ["tokenizer.json"])
    record(f"corrupt tokenizer.json: {fault}", len(READS_TOKENIZER),
           outcome(failures, len(READS_TOKENIZER), READS_TOKENIZER))
    assert not failures, failures
    print(examples[0])


def test_corrupt_trainer_state_on_resume(base, tmp_path, capsys):
    """train --resume reads trainer.json and trainer.safetensors as well."""
    cases = {"trainer.json garbage": write("trainer.json", "{\"step\": 1,"),
             "trainer.json wrong field": lambda c: (c / "trainer.json").write_text(
                 json.dumps({**json.loads((c / "trainer.json").read_text()), "step": "one"})),
             "trainer.json unknown train_config field": lambda c: (c / "trainer.json").write_text(json.dumps(
                 {**(s := json.loads((c / "trainer.json").read_text())), "train_config": {**s["train_config"],
                                                                                          "stepz": 3}})),
             "trainer.safetensors truncated": lambda c: (c / "trainer.safetensors").write_bytes(
                 (c / "trainer.safetensors").read_bytes()[:-100])}
    failures = []
    for name, corrupt in cases.items():
        run_dir = tmp_path / name.replace(" ", "_")
        shutil.copytree(base["run"], run_dir)
        corrupt(run_dir / "checkpoint")
        rc, err = run(capsys, ["train", "--out", str(run_dir), "--resume", "--steps", "2", "--no-progress"])
        file = "trainer.safetensors" if "safetensors" in name else "trainer.json"
        problem = one_line_problem("train", rc, err, str(run_dir / "checkpoint" / file))
        if problem:
            failures.append(f"{name}: {problem}")
    record("corrupt training state (train --resume)", len(cases), outcome(failures, len(cases)))
    assert not failures, failures


# ---- YAML run configs ---------------------------------------------------------------------------

YAML_FAULTS = {
    "garbage YAML": ("model: {preset: gpt-tiny\ntrain: [steps: 1\n", "not valid YAML"),
    "binary (not UTF-8)": (bytes(range(128, 256)), "not UTF-8"),
    "not a mapping": ("- model\n- train\n", "must be a mapping"),
    "a section that is not a mapping": ("model: gpt-tiny\n", "section 'model' must be a mapping"),
    "unknown section": ("modle: {preset: gpt-tiny}\n", "unknown section"),
    "unknown train field": ("train:\n  stepz: 10\n", "unknown training field(s): stepz (did you mean steps?)"),
    "wrong-typed train field": ("train:\n  lr: fast\n", "lr must be float"),
    "unknown model field": ("model:\n  preset: gpt-tiny\n  n_layers: 2\n", "n_layers (did you mean n_layer?)"),
    "wrong-typed model field": ("model:\n  preset: gpt-tiny\n  d_model: wide\n", "d_model must be int"),
    "unknown data field": ("data:\n  tokeniser: char\n", "unknown data field(s): tokeniser (did you mean tokenizer?)"),
    "wrong-typed data field": ("data:\n  tokenizer: sentencepiece\n", "tokenizer must be one of"),
}


def test_corrupt_run_config(base, tmp_path, capsys):
    failures = []
    for i, (name, (text, message)) in enumerate(YAML_FAULTS.items()):
        config = tmp_path / f"run{i}.yaml"
        config.write_bytes(text) if isinstance(text, bytes) else config.write_text(text, encoding="utf-8")
        rc, err = run(capsys, ["train", "--config", str(config), "--data", str(base["text"]),
                               "--out", str(tmp_path / f"out{i}"), "--steps", "1", "--no-progress"])
        problem = one_line_problem("train", rc, err, str(config))
        if problem is None and message not in err:
            problem = f"does not say {message!r}: {err.strip()!r}"
        if problem:
            failures.append(f"{name}: {problem}")
        assert not (tmp_path / f"out{i}").exists(), "a refused run config must not start a run folder"
    record("corrupt YAML run config (train --config)", len(YAML_FAULTS), outcome(failures, len(YAML_FAULTS)))
    assert not failures, failures


# ---- GGUF ---------------------------------------------------------------------------------------

def tiny_gguf(path: Path, d: int = 32, n_head: int = 4, n_kv: int = 2, ff: int = 48) -> Path:
    """A one-layer Llama GGUF with random F32 weights, as llama.cpp's converter lays it out."""
    gguf = pytest.importorskip("gguf")
    from tokenizers import pre_tokenizers
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe"]
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    hd = d // n_head
    w.add_tensor("token_embd.weight", (0.1 * rng.standard_normal((len(tokens), d))).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for name, shape in (("attn_norm", (d,)), ("attn_q", (d, d)), ("attn_k", (n_kv * hd, d)),
                        ("attn_v", (n_kv * hd, d)), ("attn_output", (d, d)), ("ffn_norm", (d,)),
                        ("ffn_gate", (ff, d)), ("ffn_up", (ff, d)), ("ffn_down", (d, ff))):
        w.add_tensor(f"blk.0.{name}.weight", (0.1 * rng.standard_normal(shape)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def retype(data: bytes, tensor: str, type_id: int) -> bytes:
    """The file with ``tensor``'s type id in its tensor-info record replaced (name, n_dims u32,
    n_dims u64 dimensions, type u32, offset u64)."""
    out = bytearray(data)
    at = data.index(tensor.encode()) + len(tensor)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", out, at + 4 + 8 * n_dims, type_id)
    return bytes(out)


def test_corrupt_gguf(tmp_path, capsys):
    good = tiny_gguf(tmp_path / "good.gguf")
    assert run(capsys, ["import-gguf", str(good), str(tmp_path / "ok")])[0] == 0
    data = good.read_bytes()
    i32 = 26  # GGMLQuantizationType.I32: same 4 bytes per weight as F32, so the file still parses
    cases = {"truncated (half)": (data[: len(data) // 2], "truncated or corrupt"),
             "truncated (last byte)": (data[:-1], "truncated or corrupt"),
             "truncated (inside the header)": (data[:40], "truncated or corrupt"),
             "empty": (b"", "not a readable GGUF file"),
             "bad magic": (b"GGUX" + data[4:], "not GGUF's magic"),
             "unsupported tensor type (I32 weights)": (retype(data, "token_embd.weight", i32),
                                                      "type I32, which the gguf package cannot dequantise"),
             "unknown tensor type id": (retype(data, "blk.0.attn_q.weight", 99), "not a readable GGUF file")}
    positions = trials(0, 1) and range(8, len(data), max(1, len(data) // 400))
    for at in positions or ():  # full run: cut the file at many places
        cases[f"cut at {at}"] = (data[:at], "GGUF")
    failures = []
    for i, (name, (content, message)) in enumerate(cases.items()):
        f = tmp_path / f"bad{i}.gguf"
        f.write_bytes(content)
        rc, err = run(capsys, ["import-gguf", str(f), str(tmp_path / f"out{i}")])
        problem = one_line_problem("import-gguf", rc, err, str(f))
        if problem is None and message not in err:
            problem = f"does not say {message!r}: {err.strip()!r}"
        if problem:
            failures.append(f"{name}: {problem}")
        if (tmp_path / f"out{i}").exists():
            failures.append(f"{name}: wrote {tmp_path / f'out{i}'}")
    record("corrupt GGUF (import-gguf)", len(cases), outcome(failures, len(cases)))
    assert not failures, failures


# ---- Hugging Face folders -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(base, tmp_path_factory):
    """The tiny GPT exported as a Hugging Face folder (GPT-2 format)."""
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    assert main(["export-hf", str(base["gpt"]), str(folder)]) == 0
    return folder


def shard(folder: Path, names: dict[str, str] | None = None) -> dict[str, str]:
    """Split model.safetensors into two shards + an index; returns the weight map."""
    tensors = safetensors.torch.load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(tensors)
    half = len(keys) // 2
    files = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for file, part in files.items():
        safetensors.torch.save_file({k: tensors[k] for k in part}, str(folder / file), metadata={"format": "pt"})
        weight_map |= {k: file for k in part}
    weight_map |= names or {}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_corrupt_hf_folders(hf_folder, tmp_path, capsys, monkeypatch):
    from tfamily.interop import io as hf_io
    opened: list[str] = []
    real = hf_io.load_safetensors
    monkeypatch.setattr(hf_io, "load_safetensors", lambda p: (opened.append(str(p)), real(p))[1])
    outside = tmp_path / "outside.safetensors"
    safetensors.torch.save_file({"h.0.attn.c_attn.weight": torch.zeros(2)}, str(outside))

    def escape(target: str):
        # "~" sorts after "model-…": the escaping name is checked before any shard is opened
        return lambda f: shard(f, {"h.0.attn.c_attn.weight": target})

    cases = {
        "truncated model.safetensors": (lambda f: truncate(f), "model.safetensors", "truncated or corrupt"),
        "garbage config.json": (write("config.json", "{\"model_type\": \"gpt2\","), "config.json", "not valid JSON"),
        "config.json field of a wrong type": (lambda f: change_config(f, n_embd="wide"), "config.json", "n_embd"),
        "config.json disagrees with the weights": (lambda f: change_config(f, n_embd=48), "gpt2",
                                                    "shape mismatches"),
        "garbage tokenizer.json": (write("tokenizer.json", "{\"model\": "), "tokenizer.json", "not JSON"),
        "sharded, a shard missing": (lambda f: (shard(f), (f / "model-00002-of-00002.safetensors").unlink()),
                                     "model-00002-of-00002.safetensors", "not found"),
        "sharded, a shard truncated": (lambda f: (shard(f), truncate_file(f / "model-00001-of-00002.safetensors")),
                                       "model-00001-of-00002.safetensors", "truncated or corrupt"),
        "index: garbage": (lambda f: (shard(f), (f / "model.safetensors.index.json").write_text("{")),
                           "model.safetensors.index.json", "not a valid shard index"),
        "index points outside (../)": (escape("~/../../outside.safetensors"), "model.safetensors.index.json",
                                       "not a plain file name"),
        "index points outside (absolute)": (escape(str(outside)), "model.safetensors.index.json",
                                            "not a plain file name"),
        "index points at /etc/passwd": (escape("~/../../../../../../etc/passwd"), "model.safetensors.index.json",
                                        "not a plain file name"),
    }
    failures = []
    for i, (name, (corrupt, file, message)) in enumerate(cases.items()):
        folder = tmp_path / f"hf{i}"
        shutil.copytree(hf_folder, folder)
        corrupt(folder)
        opened.clear()
        for command in (["import-hf", str(folder), str(tmp_path / f"out{i}")], ["embed", str(folder), "hi"]):
            rc, err = run(capsys, command)
            problem = one_line_problem(command[0], rc, err, str(folder / file) if file != "gpt2" else str(folder))
            if problem is None and message not in err:
                problem = f"does not say {message!r}: {err.strip()!r}"
            if problem:
                failures.append(f"{command[0]}, {name}: {problem}")
            if "outside" in name or "passwd" in name:
                assert opened == [], f"{name}: opened {opened} before refusing the index"
        assert not (tmp_path / f"out{i}").exists()
    record("corrupt Hugging Face folder (import-hf, embed)", len(cases), outcome(failures, len(cases)))
    assert not failures, failures


def truncate_file(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:-100])


# ---- a checkpoint of the wrong family -----------------------------------------------------------

WRONG_FAMILY = {  # command, checkpoint, words the line must have
    "generate": ("bert", ["generate", "{c}", "--prompt", "a"], "family 'encoder'"),
    "chat": ("bert", ["chat", "{c}", "--message", "hi"], "family 'encoder'"),
    "fewshot": ("bert", ["fewshot", "{c}", "--example", "a => b", "--query", "c"], "family 'encoder'"),
    "translate": ("bert", ["translate", "{c}", "hello"], "family 'encoder'"),
    "infill": ("bert", ["infill", "{c}", "a [MASK] b"], "family 'encoder'"),
    "translate (a GPT)": ("gpt", ["translate", "{c}", "hello"], "family 'decoder'"),
    "eval (perplexity of a BERT)": ("bert", ["eval", "{c}", "--data", "{text}"], "family 'encoder'"),
    "generate (a classifier)": ("classifier", ["generate", "{c}", "--prompt", "a"], "'sequence_classification' head"),
    "finetune (a T5)": ("t5", ["finetune", "{c}", "--train", "{tsv}", "--val", "{tsv}", "--out", "{out}"],
                        "'encoder-decoder'"),
}


def test_wrong_family(base, tmp_path, capsys):
    """One line naming the command (its prefix), the checkpoint and its family."""
    failures = []
    for name, (family, argv, words) in WRONG_FAMILY.items():
        ckpt = str(base[family])
        argv = [a.format(c=ckpt, text=base["text"], tsv=base["tsv"], out=tmp_path / "ft") for a in argv]
        rc, err = run(capsys, argv)
        problem = one_line_problem(argv[0], rc, err, ckpt)
        if problem is None and not (err.startswith(f"tfamily {argv[0]}: error: ") and words in err):
            problem = f"does not say {words!r}: {err.strip()!r}"
        if problem:
            failures.append(f"{name}: {problem}")
    record("checkpoint of the wrong family", len(WRONG_FAMILY), outcome(failures, len(WRONG_FAMILY)))
    assert not failures, failures


@pytest.mark.parametrize("command", ["embed", "knn"])
def test_embed_and_knn_take_a_decoder_too(command, base, capsys):
    """embed / knn pool a decoder's last token (DESIGN: 'from any checkpoint'): a GPT is no error."""
    argv = (["embed", str(base["gpt"]), "hello"] if command == "embed" else
            ["knn", str(base["gpt"]), "--train", str(base["tsv"]), "--test", str(base["tsv"]), "--k", "1"])
    rc, err = run(capsys, argv)
    assert rc == 0, err
