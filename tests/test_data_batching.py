"""Batch iteration and splits: flaxseq.data.batching and flaxseq.data.splits."""

import itertools
import json

import numpy as np
import pytest

from flaxseq.data import BatchIterator, split_indices


def make_arrays(n):
    """Aligned arrays whose rows identify their item: ids `[n, 3]`, lengths `[n]`, labels `[n]`."""
    ids = np.arange(n * 3, dtype=np.int32).reshape(n, 3)
    return ids, ids[:, 0] // 3, np.array([f"item{i}" for i in range(n)])


def items_of(batch):
    """The item numbers of a batch, checking that its arrays are aligned."""
    ids, lengths, labels = batch
    assert ids[:, 0].tolist() == (lengths * 3).tolist()
    assert labels.tolist() == [f"item{i}" for i in lengths]
    return lengths.tolist()


def run(batches, epochs):
    """Item numbers of every batch of `epochs` epochs, as a list of lists."""
    return [items_of(batch) for _ in range(epochs) for batch in batches]


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (7, 10, False)])
def test_each_epoch_is_a_permutation_in_batches(n, batch_size, drop_last):
    batches = BatchIterator(*make_arrays(n), batch_size=batch_size, seed=1, drop_last=drop_last)
    expected_len = n // batch_size if drop_last else -(-n // batch_size)
    assert len(batches) == expected_len
    for epoch in range(3):
        assert (batches.epoch, batches.position) == (epoch, 0)
        epoch_batches = [items_of(batch) for batch in batches]
        assert len(epoch_batches) == expected_len
        assert [len(b) for b in epoch_batches[:-1]] == [batch_size] * (expected_len - 1)
        flat = list(itertools.chain.from_iterable(epoch_batches))
        assert flat == batches.order(epoch)[: len(flat)].tolist()
        assert sorted(batches.order(epoch).tolist()) == list(range(n))
        if drop_last:
            assert len(flat) == n - n % batch_size
        else:
            assert sorted(flat) == list(range(n))


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = BatchIterator(np.arange(50), batch_size=8, seed=3)
    b = BatchIterator(np.arange(50), batch_size=5, seed=3, drop_last=True)
    assert all(np.array_equal(a.order(e), b.order(e)) for e in range(5))
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(a.order(0), BatchIterator(np.arange(50), batch_size=8, seed=4).order(0))
    assert np.array_equal(a.order(2), np.random.default_rng([3, 2]).permutation(50))
    assert BatchIterator(np.arange(5), batch_size=2, shuffle=False).order(7).tolist() == [0, 1, 2, 3, 4]
    assert [b[0].tolist() for b in BatchIterator(np.arange(5), batch_size=2, shuffle=False)] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("drop_last", [False, True])
def test_resuming_at_every_position_yields_the_remaining_batches(drop_last):
    arrays = make_arrays(11)
    reference = BatchIterator(*arrays, batch_size=4, seed=5, drop_last=drop_last)
    uninterrupted = run(reference, 3)
    per_epoch = len(reference)
    for stop in range(len(uninterrupted) + 1):
        batches = BatchIterator(*arrays, batch_size=4, seed=5, drop_last=drop_last)
        stream = (items_of(batch) for _ in range(3) for batch in batches)
        seen = list(itertools.islice(stream, stop))
        state = json.loads(json.dumps(batches.state()))
        assert (state["epoch"], state["position"]) == divmod(stop, per_epoch)
        resumed = BatchIterator.from_state(state, *arrays)
        rest = [items_of(batch) for _ in range(resumed.epoch, 3) for batch in resumed]
        assert seen + rest == uninterrupted


def test_leaving_a_loop_early_keeps_the_position():
    batches = BatchIterator(np.arange(10), batch_size=2, seed=0)
    whole = [b[0].tolist() for b in BatchIterator(np.arange(10), batch_size=2, seed=0)]
    first = []
    for (batch,) in batches:
        first.append(batch.tolist())
        if len(first) == 2:
            break
    assert batches.state()["position"] == 2
    assert first + [b[0].tolist() for b in batches] == whole
    assert batches.epoch == 1


def test_restore_into_an_existing_iterator():
    arrays = make_arrays(9)
    batches = BatchIterator(*arrays, batch_size=2, seed=9)
    uninterrupted = run(batches, 2)
    fresh = BatchIterator(*arrays, batch_size=2, seed=9)
    fresh.restore({**fresh.state(), "epoch": 1, "position": 3})
    assert [items_of(b) for b in fresh] == uninterrupted[len(fresh) + 3 :]


def test_state_is_small_and_json_serialisable():
    state = BatchIterator(np.zeros((6, 2)), batch_size=4, seed=2, drop_last=True).state()
    assert state == {
        "epoch": 0, "position": 0, "num_items": 6, "batch_size": 4, "shuffle": True, "drop_last": True, "seed": 2,
        "sort_chunk": 0,
    }
    assert json.loads(json.dumps(state)) == state


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": 1}, "seed: state has 1, iterator has 0"),
        ({"batch_size": 3, "shuffle": False}, "batch_size: state has 3, iterator has 2; shuffle: state has False"),
        ({"num_items": 7}, "num_items: state has 7, iterator has 6"),
        ({"position": 3}, "state['position'] must be less than the 3 batches per epoch"),
        ({"epoch": -1}, "state['epoch'] must be a non-negative int, got -1"),
        ({"epoch": 1.5}, "state['epoch'] must be a non-negative int, got 1.5"),
        ({"extra": 1}, "state must be a dict with keys"),
    ],
)
def test_restore_errors(change, message):
    batches = BatchIterator(np.arange(6), batch_size=2)
    with pytest.raises(ValueError) as info:
        batches.restore({**batches.state(), **change})
    assert message in str(info.value)
    with pytest.raises(ValueError, match="state must be a dict with keys"):
        batches.restore([0, 0])
    with pytest.raises(TypeError, match=r"state\['shuffle'\] must be a bool, got int"):
        batches.restore({**batches.state(), "shuffle": 1})


@pytest.mark.parametrize(
    "arrays, kwargs, error, message",
    [
        ((), {"batch_size": 2}, ValueError, "BatchIterator needs at least one array, got none"),
        ((np.zeros(4), np.zeros(5)), {"batch_size": 2}, ValueError, "arrays[0] has 4 items, arrays[1] has 5"),
        ((np.zeros(4), np.float32(1)), {"batch_size": 2}, ValueError, "arrays[1] must have a first (item) dimension"),
        ((np.zeros(4),), {"batch_size": 0}, ValueError, "batch_size must be greater than zero, got 0"),
        ((np.zeros(4),), {"batch_size": 2.0}, TypeError, "batch_size should be of type int, got: float"),
        ((np.zeros(4),), {"batch_size": 2, "seed": -1}, ValueError, "seed must be at least 0, got -1"),
        ((np.zeros(4),), {"batch_size": 2, "shuffle": 1}, TypeError, "shuffle must be a bool, got int"),
        ((np.zeros(4),), {"batch_size": 5, "drop_last": True}, ValueError, "4 items with batch_size=5 and drop_last"),
        ((np.zeros(0),), {"batch_size": 1}, ValueError, "no batch to yield: 0 items"),
    ],
)
def test_construction_errors(arrays, kwargs, error, message):
    with pytest.raises(error) as info:
        BatchIterator(*arrays, **kwargs)
    assert message in str(info.value)


# Batching by length


def test_sorted_batches_hold_similar_lengths_in_random_order():
    rng = np.random.default_rng(0)
    n, batch_size = 1000, 10
    lengths = rng.integers(1, 30, n)
    batches = BatchIterator(np.arange(n), lengths, batch_size=batch_size, seed=1, sort_by=lengths, sort_chunk=20)
    for epoch in range(2):
        order = batches.order(epoch)
        assert sorted(order.tolist()) == list(range(n))
        epoch_batches = [b for b, _ in batches]
        assert np.array_equal(np.concatenate(epoch_batches), order)
        spread = [lengths[b].max() - lengths[b].min() for b in epoch_batches]
        random_spread = [lengths[b].max() - lengths[b].min() for b in np.split(rng.permutation(n), n // batch_size)]
        assert np.mean(spread) < 0.25 * np.mean(random_spread)
        firsts = [int(lengths[b].min()) for b in epoch_batches]
        assert firsts != sorted(firsts)  # the batches themselves are shuffled
    assert not np.array_equal(batches.order(0), batches.order(1))
    # each run of sort_chunk batches holds the same items as the shuffled order's run
    plain = np.random.default_rng([1, 0]).permutation(n)
    chunks = [set(plain[i : i + 200].tolist()) for i in range(0, n, 200)]
    assert all(any(set(b.tolist()) <= chunk for chunk in chunks) for b in np.split(batches.order(0), n // batch_size))


def test_sorted_iteration_keeps_a_short_last_batch_last_and_resumes():
    lengths = np.arange(23) % 7
    arrays = make_arrays(23)
    reference = BatchIterator(*arrays, batch_size=4, seed=2, sort_by=lengths, sort_chunk=2)
    uninterrupted = run(reference, 2)
    assert [len(b) for b in uninterrupted[:6]] == [4, 4, 4, 4, 4, 3]
    batches = BatchIterator(*arrays, batch_size=4, seed=2, sort_by=lengths, sort_chunk=2)
    seen = [items_of(b) for b in itertools.islice(iter(batches), 4)]
    state = batches.state()
    assert state["sort_chunk"] == 2
    resumed = BatchIterator.from_state(state, *arrays, sort_by=lengths)
    assert seen + [items_of(b) for _ in range(2) for b in resumed][: len(uninterrupted) - 4] == uninterrupted
    with pytest.raises(ValueError, match=r"sort_by must be given exactly when state\['sort_chunk'\] > 0, got 2"):
        BatchIterator.from_state(state, *arrays)
    with pytest.raises(ValueError, match="sort_chunk: state has 2, iterator has 0"):
        BatchIterator(*arrays, batch_size=4, seed=2).restore(state)
    unshuffled = BatchIterator(np.arange(5), batch_size=2, shuffle=False, sort_by=np.array([3, 1, 2, 1, 0]))
    assert unshuffled.order(0).tolist() == [4, 1, 3, 2, 0]
    with pytest.raises(ValueError, match=r"sort_by must have shape \[n\] = \(5,\), got \(4,\)"):
        BatchIterator(np.arange(5), batch_size=2, sort_by=np.zeros(4))


def test_order_rejects_a_negative_epoch():
    with pytest.raises(ValueError, match="epoch must be at least 0, got -1"):
        BatchIterator(np.arange(3), batch_size=1).order(-1)


# Splits


@pytest.mark.parametrize("n, fractions", [(2225, (0.8, 0.1, 0.1)), (10, (0.5, 0.5)), (7, (0.6, 0.2, 0.2)), (3, (1.0,))])
def test_split_is_a_partition_with_rounded_sizes(n, fractions):
    parts = split_indices(n, fractions, seed=0)
    assert len(parts) == len(fractions)
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    for part, fraction in zip(parts, fractions, strict=True):
        assert part.tolist() == sorted(part.tolist())
        assert abs(len(part) - fraction * n) < 1
    assert sum(map(len, parts)) == n


def test_split_is_stable_and_depends_on_the_seed():
    first = split_indices(100, (0.7, 0.2, 0.1), seed=4)
    again = split_indices(100, (0.7, 0.2, 0.1), seed=4)
    other = split_indices(100, (0.7, 0.2, 0.1), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    order = np.random.default_rng(4).permutation(100)
    assert first[0].tolist() == sorted(order[:70].tolist())
    assert first[2].tolist() == sorted(order[90:].tolist())


@pytest.mark.parametrize(
    "n, fractions, error, message",
    [
        (10, (0.8, 0.1), ValueError, "fractions must add up to 1, got (0.8, 0.1)"),
        (10, (1.2, -0.2), ValueError, "fractions must be numbers in (0, 1], got (1.2, -0.2)"),
        (10, (), ValueError, "fractions must be numbers in (0, 1], got ()"),
        (10, ("a",), ValueError, "fractions must be numbers in (0, 1], got ('a',)"),
        (5, (0.9, 0.05, 0.05), ValueError, "splitting n=5 items by fractions (0.9, 0.05, 0.05) leaves an empty part"),
        (0, (1.0,), ValueError, "n must be greater than zero, got 0"),
    ],
)
def test_split_errors(n, fractions, error, message):
    with pytest.raises(error) as info:
        split_indices(n, fractions)
    assert message in str(info.value)


def test_from_state_carries_the_position_over_to_new_arrays_of_the_same_size():
    batches = BatchIterator(np.arange(10), batch_size=3, seed=1)
    for _ in batches:
        pass
    next(iter(batches))
    moved = BatchIterator.from_state(batches.state(), np.arange(10) * 100)
    expected = [b[0] * 100 for b in batches]
    assert [b[0].tolist() for b in moved] == [e.tolist() for e in expected]
    assert (moved.epoch, moved.position) == (batches.epoch, batches.position) == (2, 0)
