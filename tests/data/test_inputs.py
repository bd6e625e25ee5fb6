"""ExampleBatches: random epochs, resumable by step, and batches grouped by length."""

import pytest

from tfamily.data.inputs import ExampleBatches


def test_each_epoch_is_a_new_order_of_every_example():
    batches = ExampleBatches(list(range(10)), 3, seed=1)
    assert len(batches) == 3  # the last partial batch is left out
    first = [x for s in range(3) for x in batches.batch(s)]
    second = [x for s in range(3, 6) for x in batches.batch(s)]
    assert len(set(first)) == 9 and len(set(second)) == 9 and first != second


@pytest.mark.parametrize("pool", [1, 3, 64])
def test_grouping_by_length_keeps_every_example_once_per_epoch_and_cuts_padding(pool):
    import random
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(400)]
    examples = list(range(400))
    grouped = ExampleBatches(examples, 8, seed=3, lengths=lengths, pool=pool)
    plain = ExampleBatches(examples, 8, seed=3)
    assert len(grouped) == len(plain) == 50
    for epoch in range(2):
        steps = range(epoch * 50, (epoch + 1) * 50)
        seen = [x for s in steps for x in grouped.batch(s)]
        assert sorted(seen) == examples  # every example once, in batches of 8

    def padding(batches):
        return sum(max(lengths[x] for x in b) * len(b) - sum(lengths[x] for x in b) for b in batches)
    grouped_pad = padding([grouped.batch(s) for s in range(50)])
    plain_pad = padding([plain.batch(s) for s in range(50)])
    if pool == 3:  # 24 examples sorted at a time
        assert grouped_pad < plain_pad / 2
    if pool == 64:  # one pool holds the whole epoch: batches are runs of the sorted lengths
        assert grouped_pad < plain_pad / 10


def test_grouped_batches_are_a_function_of_seed_and_step():
    lengths = [i % 17 for i in range(100)]
    a = ExampleBatches(list(range(100)), 4, seed=5, lengths=lengths, pool=4)
    b = ExampleBatches(list(range(100)), 4, seed=5, lengths=lengths, pool=4)
    late = [a.batch(s) for s in (60, 3, 27)]  # out of order, across epochs: as a resumed run asks
    assert late == [b.batch(s) for s in (60, 3, 27)]
    assert [a.batch(s) for s in range(25)] != [a.batch(s) for s in range(25, 50)]  # a new order each epoch


def test_grouping_needs_a_length_per_example():
    with pytest.raises(ValueError, match="3 lengths for 4 examples"):
        ExampleBatches([1, 2, 3, 4], 2, lengths=[1, 2, 3])
