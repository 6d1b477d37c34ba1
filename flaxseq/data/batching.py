"""Mini-batches over aligned arrays: seeded shuffling per epoch, resumable mid-epoch.

The order of epoch `e` is a permutation drawn from `np.random.default_rng([seed, e])`: it
depends only on the seed and the epoch, so a run restored from `state()` yields exactly the
batches an uninterrupted run would have yielded.

    batches = BatchIterator(ids, lengths, labels, batch_size=32, seed=0)
    for epoch in range(batches.epoch, num_epochs):
        for ids_b, lengths_b, labels_b in batches:      # the rest of the current epoch
            ...                                         # ids_b: [32, max_length], labels_b: [32]
            checkpoint = {"batches": batches.state()}   # JSON-serialisable

    batches = BatchIterator.from_state(checkpoint["batches"], ids, lengths, labels)

With `sort_by` (e.g. the lengths `[n]`), each run of `sort_chunk` batches' worth of shuffled
items is sorted by it before batching, and the full batches are then shuffled: a batch holds
items of similar length, so that trimming its padding (`flaxseq.train.Trainer`'s `trim_time`)
leaves little, while the batches still come in random order.

Each `for` loop over the iterator runs to the end of the current epoch, then the iterator moves
to the next epoch (`epoch += 1`, `position = 0`) as it yields the epoch's last batch. Leaving a
loop early keeps the position: the next loop continues where it stopped.
"""

import numbers

import numpy as np

from flaxseq.checks import check_int

STATE_KEYS = ("epoch", "position", "num_items", "batch_size", "shuffle", "drop_last", "seed", "sort_chunk")


class BatchIterator:
    """Batches of `arrays` (all with the same first dimension `n`), as tuples in the same order.

    Args:
        *arrays: arrays `[n, ...]`, e.g. ids `[n, time]`, lengths `[n]`, labels `[n]`.
        batch_size: items per batch.
        shuffle: draw a new order each epoch; otherwise items come in order `0 .. n-1`.
        seed: the shuffling seed (a non-negative int).
        drop_last: leave out the last batch of an epoch when it has fewer than `batch_size` items.
        sort_by: optional `[n]` numbers (e.g. lengths): batch items of similar value together.
        sort_chunk: batches per sorted run of items (used with `sort_by` only).
    """

    def __init__(
        self, *arrays, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
        sort_by=None, sort_chunk: int = 100,
    ):
        if not arrays:
            raise ValueError("BatchIterator needs at least one array, got none")
        self.arrays = tuple(np.asarray(array) for array in arrays)
        for i, array in enumerate(self.arrays):
            if array.ndim == 0:
                raise ValueError(f"arrays[{i}] must have a first (item) dimension, got a scalar")
            if len(array) != len(self.arrays[0]):
                raise ValueError(
                    f"arrays must have the same first dimension: arrays[0] has {len(self.arrays[0])} items, "
                    f"arrays[{i}] has {len(array)}"
                )
        check_int("batch_size", batch_size, 1)
        check_int("seed", seed, 0)
        _check_bool("shuffle", shuffle)
        _check_bool("drop_last", drop_last)
        self.num_items = len(self.arrays[0])
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        check_int("sort_chunk", sort_chunk, 1)
        self.sort_by, self.sort_chunk = None, 0  # sort_chunk 0: unsorted
        if sort_by is not None:
            self.sort_by, self.sort_chunk = np.asarray(sort_by), sort_chunk
            if self.sort_by.shape != (self.num_items,):
                raise ValueError(f"sort_by must have shape [n] = ({self.num_items},), got {self.sort_by.shape}")
        if len(self) == 0:
            raise ValueError(
                f"no batch to yield: {self.num_items} items with batch_size={batch_size} and drop_last={drop_last}"
            )
        self.epoch = 0
        self.position = 0  # batches of the current epoch already yielded

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.num_items, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        """The item indices `[n]` of epoch `epoch`, in the order they are batched."""
        check_int("epoch", epoch, 0)
        if not self.shuffle:
            order = np.arange(self.num_items)
            return order if self.sort_by is None else order[np.argsort(self.sort_by, kind="stable")]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_items)
        if self.sort_by is None:
            return order
        chunk = self.sort_chunk * self.batch_size
        for start in range(0, self.num_items, chunk):
            part = order[start : start + chunk]
            order[start : start + chunk] = part[np.argsort(self.sort_by[part], kind="stable")]
        full = self.num_items // self.batch_size  # the full batches change places; a short last one stays last
        blocks = order[: full * self.batch_size].reshape(full, self.batch_size)
        order[: full * self.batch_size] = blocks[rng.permutation(full)].reshape(-1)
        return order

    def __iter__(self):
        """Yield the remaining batches of the current epoch, each a tuple of arrays `[batch, ...]`."""
        epoch, order = self.epoch, self.order(self.epoch)
        for k in range(self.position, len(self)):
            index = order[k * self.batch_size : (k + 1) * self.batch_size]
            self.epoch, self.position = (epoch, k + 1) if k + 1 < len(self) else (epoch + 1, 0)
            yield tuple(array[index] for array in self.arrays)

    def state(self) -> dict:
        """The position and settings, as a small JSON-serialisable dict."""
        return {
            "epoch": self.epoch, "position": self.position, "num_items": self.num_items,
            "batch_size": self.batch_size, "shuffle": self.shuffle, "drop_last": self.drop_last, "seed": self.seed,
            "sort_chunk": self.sort_chunk,
        }

    def restore(self, state: dict) -> None:
        """Continue from `state` (from `state()`), whose settings must match this iterator's."""
        _check_state(state)
        mismatched = [
            f"{key}: state has {state[key]!r}, iterator has {getattr(self, key)!r}"
            for key in STATE_KEYS[2:]
            if state[key] != getattr(self, key)
        ]
        if mismatched:
            raise ValueError("state does not match this iterator's settings: " + "; ".join(mismatched))
        if state["position"] >= len(self):
            raise ValueError(f"state['position'] must be less than the {len(self)} batches per epoch, got {state}")
        self.epoch, self.position = state["epoch"], state["position"]

    @classmethod
    def from_state(cls, state: dict, *arrays, sort_by=None) -> "BatchIterator":
        """A new iterator over `arrays` (and `sort_by`, if the state's iterator sorted) with the
        settings and position of `state`."""
        _check_state(state)
        if (sort_by is None) != (state["sort_chunk"] == 0):
            raise ValueError(f"sort_by must be given exactly when state['sort_chunk'] > 0, got {state['sort_chunk']}")
        batches = cls(
            *arrays, batch_size=state["batch_size"], shuffle=state["shuffle"], seed=state["seed"],
            drop_last=state["drop_last"], sort_by=sort_by, sort_chunk=state["sort_chunk"] or 1,
        )
        batches.restore(state)
        return batches


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_state(state) -> None:
    if not isinstance(state, dict) or set(state) != set(STATE_KEYS):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state must be a dict with keys {sorted(STATE_KEYS)}, got {got}")
    for key in STATE_KEYS:
        value = state[key]
        if key in ("shuffle", "drop_last"):
            _check_bool(f"state['{key}']", value)
        elif isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"state['{key}'] must be a non-negative int, got {value!r}")
