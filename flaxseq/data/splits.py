"""Fixed, seeded train / validation / test splits of `n` items.

    >>> train, valid, test = split_indices(2225, (0.8, 0.1, 0.1), seed=0)
    >>> len(train), len(valid), len(test)
    (1780, 223, 222)

Select with `[texts[i] for i in train]` for a list, or `ids[train]` for an array.

The items are permuted with `np.random.default_rng(seed)` and cut into consecutive parts whose
sizes are the fractions of `n` rounded by largest remainder (ties to the earlier part), so the
sizes add up to `n`. Each part's indices are returned sorted; the split depends only on `n`,
the fractions and the seed.
"""

import numbers
from collections.abc import Sequence

import numpy as np

from flaxseq.checks import check_int


def split_indices(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays covering `range(n)`, one per fraction; every part must be non-empty.

    Args:
        n: the number of items.
        fractions: positive numbers adding up to 1, e.g. `(0.8, 0.1, 0.1)` for train, validation, test.
        seed: a non-negative int.

    Returns:
        One sorted int64 array of item indices per fraction.
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    fractions = tuple(fractions)
    if not fractions or any(
        isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f <= 1 for f in fractions
    ):
        raise ValueError(f"fractions must be numbers in (0, 1], got {fractions}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must add up to 1, got {fractions} (sum {sum(fractions)})")
    exact = np.asarray(fractions, np.float64) * n
    sizes = np.floor(exact).astype(np.int64)
    remainders = exact - sizes
    extra = np.argsort(-remainders, kind="stable")[: n - sizes.sum()]
    sizes[extra] += 1
    if (sizes == 0).any():
        raise ValueError(f"splitting n={n} items by fractions {fractions} leaves an empty part: sizes {sizes.tolist()}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.sort(part) for part in np.split(order, bounds))
