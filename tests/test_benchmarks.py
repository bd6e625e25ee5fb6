"""The benchmark harness's own arithmetic, and the quality comparison, on tiny models."""

import contextlib
import copy
from unittest import mock

import pytest
import torch

from benchmarks.harness import Machine, Row, Timings, bandwidth_fraction, format_table, mfu
from benchmarks.quality import compare
from tfamily.models import build_model
from tfamily.nn.quant import convert_weights
from tfamily.presets import get_preset, tiny_version

MACHINE = Machine(2, {"fp32": 100e9, "bf16": 400e9}, {"read": 30e9, "copy": 20e9, "ceiling": 30e9})


def test_a_row_with_different_dtypes_measures_each_side_against_its_own_ceiling():
    row = Row("decode", "tok/s", 100, Timings([2.0, 1.0]), Timings([4.0, 3.0]), "bf16", flops=400e9, bytes=30e9,
              theirs_dtype="fp32", theirs_bytes=60e9)
    assert mfu(row, 1.0, MACHINE) == pytest.approx(1.0)  # 400 GFLOP in 1 s against the bf16 peak
    assert mfu(row, 4.0, MACHINE, ours=False) == pytest.approx(1.0)  # against the fp32 peak
    assert bandwidth_fraction(row, 1.0, MACHINE) == pytest.approx(1.0)
    assert bandwidth_fraction(row, 4.0, MACHINE, ours=False) == pytest.approx(0.5)
    table = format_table([row], MACHINE)
    assert "3.00x" in table  # best 1.0 s against best 3.0 s
    assert "2.33x" in table  # medians 1.5 s against 3.5 s


def test_quality_of_an_identical_model_is_perfect_and_of_int8_close():
    torch.manual_seed(0)
    model = build_model(tiny_version(get_preset("gpt2-small").config())).eval()
    ids = torch.randint(0, model.cfg.vocab_size, (1, 40), generator=torch.Generator().manual_seed(2))
    same = compare(model, copy.deepcopy, ids)
    assert same.top1_agreement == 1.0 and abs(same.kl) < 1e-6 and same.ppl_fp32 == pytest.approx(same.ppl_converted)
    int8 = compare(model, lambda m: convert_weights(m, "int8"), ids)
    assert int8.tokens == 39 and 0 < int8.kl < 0.01 and int8.top1_agreement > 0.8


def test_recall_task_puts_the_pair_at_the_asked_distance():
    from benchmarks.why_transformer import RecallTask
    task = RecallTask(fillers=4, keys=3, values=5)
    ids, answer = task.batch(6, 20, torch.tensor([2, 3, 5, 10, 17, 19]), torch.Generator().manual_seed(0))
    for row, d in zip(range(6), [2, 3, 5, 10, 17, 19]):
        key = ids[row, -1].item()
        assert task.fillers <= key < task.fillers + task.keys
        assert ids[row, 20 - 1 - d].item() == key and ids[row, 20 - d].item() == answer[row].item()
        assert (ids[row, :-1] >= task.fillers).sum() == 2  # one pair; everything else is filler
    with pytest.raises(ValueError, match="distances must lie in 2..19"):
        task.batch(1, 20, torch.tensor([1]), torch.Generator())


def test_recall_task_with_distractor_pairs_keeps_them_apart():
    from benchmarks.why_transformer import RecallTask
    task = RecallTask(fillers=4, keys=6, values=5, pairs=4)
    distances = torch.tensor([2, 3, 9, 15, 18, 19] * 20)
    ids, answer = task.batch(len(distances), 20, distances, torch.Generator().manual_seed(0))
    for row, d in enumerate(distances.tolist()):
        key = ids[row, -1].item()
        assert ids[row, 20 - 1 - d].item() == key and ids[row, 20 - d].item() == answer[row].item()
        body = ids[row, :-1]
        keys = body[(body >= task.fillers) & (body < task.fillers + task.keys)]
        assert len(keys) == 4 and len(set(keys.tolist())) == 4  # four pairs, distinct keys, none overwritten
        assert ((body >= task.fillers + task.keys).sum()) == 4
        starts = (body >= task.fillers) & (body < task.fillers + task.keys)
        assert (body[1:][starts[:-1]] >= task.fillers + task.keys).all()  # every key is followed by its value
    with pytest.raises(ValueError, match="4 pairs"):
        RecallTask(pairs=4).batch(1, 8, torch.tensor([2]), torch.Generator())


def test_why_transformer_quick_run_keeps_out_of_docs(tmp_path):
    from benchmarks import why_transformer
    why_transformer.main(["parallel", "--quick", "--work", str(tmp_path)])
    table = (tmp_path / "quick" / "parallel.md").read_text()
    assert "| 256 | 8 |" in table and (tmp_path / "quick" / "parallel.png").stat().st_size > 1000
    assert why_transformer.OUT == tmp_path / "quick"
    why_transformer.OUT = why_transformer.ROOT / "docs" / "why"


def test_real_model_decode_rows_cover_every_format_batch_and_llama_cpp():
    from benchmarks import gguf_models
    names = list(gguf_models.workloads(8, 0, 1))
    for short in ("smollm2", "qwen"):
        for batch in (1, 8):
            assert [n for n in names if n.startswith(f"decode-{short}-b{batch}-") and "llama" not in n] == [
                f"decode-{short}-b{batch}-{fmt}" for fmt in gguf_models.FORMATS]
        assert f"decode-{short}-b1-llama-cpp" in names
    assert set(gguf_models.FORMATS) == {"fp32", "bf16", "int8", "int4", "gguf"}


@pytest.mark.parametrize("change,fmt", [("attention formula chosen per CPU (AMX: SDPA)", "bf16"),
                                        ("rotary tables once per forward, q and k in one pass", "bf16"),
                                        ("int8 layers on nn.native's loop at batch 1", "int8"),
                                        ("decoding step's attention in one native call", "bf16")])
def test_decode_profile_puts_back_code_that_computes_the_same_logits(change, fmt):
    """The A/B of ``decode_profile --changes`` times the code before each change against the code
    now: both sides must compute the same model (cached decoding, grouped heads). The rotary
    change is compared with the native decoding step off on both sides: undone, it hands the
    layers tables of another shape, which the native step (a different order of bf16 sums)
    does not take."""
    from benchmarks.decode_profile import BEFORE
    from tfamily.nn import native
    torch.manual_seed(0)
    model = convert_weights(build_model(get_preset("llama-tiny").config()).eval(), fmt, pack=False)
    ids = torch.randint(0, model.cfg.vocab_size, (1, 9))

    def cached_logits():
        cache = model.make_cache(1, 16)
        with torch.inference_mode():
            first = model(ids[:, :8], cache=cache).logits
            step = model(ids[:, 8:], cache=cache).logits  # 1 row: int8 layers take the decoding kernel
        return torch.cat([first, step], dim=1).float()

    same_path = mock.patch.object(native, "attend_step_available", lambda: False) if "rotary" in change \
        else contextlib.nullcontext()
    with same_path:
        now = cached_logits()
        with BEFORE[change]():
            before = cached_logits()
    assert before.shape == now.shape
    if "rotary" in change:  # the same operations in another order: the same numbers
        torch.testing.assert_close(before, now, atol=0, rtol=0)
    else:  # SDPA against matmul + softmax in bf16; fp32 sums rounded once against torch's int8 kernel
        torch.testing.assert_close(before, now, atol=0.05, rtol=0.05)
