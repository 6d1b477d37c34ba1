"""`CellScan`: a linen flaxseq cell run over the leading time axis, with the cell's parameters.

A PyTorch model that steps a cell by hand, `for t in range(T): h, c = cell(x[t], (h, c))`,
becomes `outputs, (h, c) = CellScan(cell)(x, (h, c))`. A Python loop is unrolled by `jax.jit`,
so its compile time grows with `T`; `CellScan` is one loop whatever `T`, the cell being a
one-layer, one-direction stack of its own kind (`flaxseq.stack.scan_cell`): the input products
of all steps before the loop, the gradient by hand. `flax.linen.RNN` cannot take a flaxseq cell,
whose call is PyTorch's `(input, hx) -> hx'` and not flax's `(carry, x) -> (carry, y)`, and
refuses it, naming this adapter.
"""

import flax.linen as nn

from flaxseq import checks, stack
from flaxseq.cells import _Cell, declare_weights


class CellScan(nn.Module):
    """`outputs, final = CellScan(cell).apply(variables, x, hx=None)`: `cell`'s step at every time
    step of `x`, from `hx`, each step's `h'` collected.

    `cell` is a flaxseq linen cell (`RNNCell`, `LSTMCell`, `GRUCell`, `RNNCellBase` of any kind),
    only a description here: its parameters are the `CellScan`'s own, declared as the cell
    declares them (PyTorch's names, initialiser and draws), with no level for the cell, so that
    `self.cell1 = CellScan(LSTMCell(10, 20))` reads `cell1/weight_ih` as PyTorch's `cell1.weight_ih`,
    `CellScan(cell).init(key, x)['params']` equals `cell.init(key, x[0])['params']`, and the
    cell applies one step with the same variables (so does `step`).

    Per step t, `h_t = cell(x[t], h_{t-1})` (or `(h_t, c_t)`), `h_{-1} = hx`, with the cell's
    equations (its kind, `flaxseq.kinds`).

    - `x`: `[time, batch, input_size]`, or unbatched `[time, input_size]`.
    - `hx`: the cell's `hx`: `h [batch, hidden_size]`, or `(h, c)` with a cell state (LSTM);
      zeros when None; no batch axis unbatched.
    - Returns `outputs: [time, batch, hidden_size]` (each step's `h`; `[time, hidden_size]`
      unbatched) and `final`, the last step's carry in the cell's form (`h` or `(h, c)`).

    `custom_gradient` as in the layers (`flaxseq.RNNBase`): True, the loop's gradient by hand
    (reverse mode only); False, JAX's (forward mode too).

    >>> scan = CellScan(flaxseq.LSTMCell(10, 20))
    >>> variables = scan.init(jax.random.key(0), jnp.zeros((999, 3, 10)))
    >>> outputs, (h, c) = scan.apply(variables, jnp.ones((999, 3, 10)))   # [999, 3, 20], [3, 20] each
    """

    cell: nn.Module
    custom_gradient: bool = True

    def __post_init__(self):
        if not isinstance(self.cell, _Cell):
            raise TypeError(
                "cell must be a flaxseq linen cell (flaxseq.RNNCell, LSTMCell, GRUCell or RNNCellBase), "
                f"got {type(self.cell).__module__}.{type(self.cell).__qualname__}"
                + (" (an NNX cell: its scan is flaxseq.nnx.CellScan)"
                   if type(self.cell).__module__.startswith("flaxseq.nnx") else "")
            )
        super().__post_init__()

    def setup(self):
        self.weights = declare_weights(self.cell, self.param)  # the cell's names and draws, at this level

    def _name(self) -> str:
        return f"{checks.class_name(self)}({checks.class_name(self.cell)})"

    def __call__(self, x, hx=None):
        cell = self.cell
        return stack.scan_cell(
            cell.cell_kind(), self.weights, x, hx, input_size=cell.input_size, dtype=cell.dtype, name=self._name(),
            custom_gradient=self.custom_gradient,
        )

    def step(self, input, hx=None):
        """One step of the cell with these parameters: `cell(input, hx)`, `input: [batch, input_size]`."""
        cell = self.cell
        return stack.cell_step(
            cell.cell_kind(), self.weights, input, hx, input_size=cell.input_size, dtype=cell.dtype,
            name=checks.class_name(cell),
        )
