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

Each `for` loop over the iterator runs to the end of the current epoch, then the iterator moves
to the next epoch (`epoch += 1`, `position = 0`) as it yields the epoch's last batch. Leaving a
loop early keeps the position: the next loop continues where it stopped.
"""

import numbers

import numpy as np

from flaxseq.checks import check_int

STATE_KEYS = ("epoch", "position", "num_items", "batch_size", "shuffle", "drop_last", "seed")


class BatchIterator:
    """Batches of `arrays` (all with the same first dimension `n`), as tuples in the same order.

    Args:
        *arrays: arrays `[n, ...]`, e.g. ids `[n, time]`, lengths `[n]`, labels `[n]`.
        batch_size: items per batch.
        shuffle: draw a new order each epoch; otherwise items come in order `0 .. n-1`.
        seed: the shuffling seed (a non-negative int).
        drop_last: leave out the last batch of an epoch when it has fewer than `batch_size` items.
    """

    def __init__(self, *arrays, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
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
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

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
    def from_state(cls, state: dict, *arrays) -> "BatchIterator":
        """A new iterator over `arrays` with the settings and position of `state`."""
        _check_state(state)
        batches = cls(
            *arrays, batch_size=state["batch_size"], shuffle=state["shuffle"],
            seed=state["seed"], drop_last=state["drop_last"],
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
