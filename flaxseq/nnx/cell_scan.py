"""`CellScan`: an NNX flaxseq cell run over the leading time axis, holding the cell's parameters.

The NNX twin of `flaxseq.CellScan`: `for t in range(T): h, c = cell(x[t], (h, c))` becomes
`outputs, (h, c) = CellScan(cell)(x, (h, c))`, one loop whatever `T` (a Python loop is unrolled
by `jax.jit`), computed as a one-layer, one-direction stack of the cell's kind
(`flaxseq.stack.scan_cell`). `flax.nnx.RNN` refuses a flaxseq cell, naming this adapter.
"""

import flax.linen
from flax import nnx

from flaxseq import checks, stack
from flaxseq.nnx.recurrent import RNNCellBase
from flaxseq.weights import NAMES, Weights


class CellScan(nnx.Module):
    """`outputs, final = CellScan(cell)(x, hx=None)`: `cell`'s step at every time step of `x`,
    from `hx`, each step's `h'` collected.

    `cell` is a flaxseq NNX cell (`RNNCell`, `LSTMCell`, `GRUCell`, `RNNCellBase` of any kind).
    The `CellScan` adopts the cell's own `nnx.Param`s as its attributes, under PyTorch's names
    (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), and keeps the cell's settings, not the
    cell: holding the cell as well would put every parameter at a second path, `cell/weight_ih`.
    So `self.cell1 = CellScan(LSTMCell(10, 20, rngs=rngs))` reads `cell1.weight_ih` as PyTorch's
    `cell1.weight_ih` does, with the cell's draws; the cell, which shares those variables, still
    steps with them, and so does `step` here.

    Per step t, `h_t = cell(x[t], h_{t-1})` (or `(h_t, c_t)`), `h_{-1} = hx`, with the cell's
    equations (its kind, `flaxseq.kinds`).

    - `x`: `[time, batch, input_size]`, or unbatched `[time, input_size]`.
    - `hx`: the cell's `hx`: `h [batch, hidden_size]`, or `(h, c)` with a cell state (LSTM);
      zeros when None; no batch axis unbatched.
    - Returns `outputs: [time, batch, hidden_size]` (each step's `h`; `[time, hidden_size]`
      unbatched) and `final`, the last step's carry in the cell's form (`h` or `(h, c)`).

    `custom_gradient` as in the layers (`flaxseq.nnx.RNNBase`): True, the loop's gradient by
    hand (reverse mode only); False, JAX's (forward mode too).

    >>> scan = CellScan(flaxseq.nnx.LSTMCell(10, 20, rngs=nnx.Rngs(0)))
    >>> outputs, (h, c) = scan(jnp.ones((999, 3, 10)))   # [999, 3, 20], [3, 20] each
    """

    def __init__(self, cell: RNNCellBase, *, custom_gradient: bool = True):
        if not isinstance(cell, RNNCellBase):
            raise TypeError(
                "cell must be a flaxseq NNX cell (flaxseq.nnx.RNNCell, LSTMCell, GRUCell or RNNCellBase), "
                f"got {type(cell).__module__}.{type(cell).__qualname__}"
                + (" (a linen cell: its scan is flaxseq.CellScan)" if isinstance(cell, flax.linen.Module) else "")
            )
        self.kind, self.input_size, self.hidden_size = cell.kind, cell.input_size, cell.hidden_size
        self.bias = cell.bias
        self.param_dtype, self.dtype, self.custom_gradient = cell.param_dtype, cell.dtype, custom_gradient
        self.cell_name = checks.class_name(cell)
        for name in NAMES:
            if hasattr(cell, name):
                setattr(self, name, getattr(cell, name))  # the cell's nnx.Param itself

    def _weights(self) -> Weights:
        return Weights(*(getattr(self, name)[...] if hasattr(self, name) else None for name in NAMES))

    def __call__(self, x, hx=None):
        return stack.scan_cell(
            self.kind, self._weights(), x, hx, input_size=self.input_size, dtype=self.dtype,
            name=f"{checks.class_name(self)}({self.cell_name})", custom_gradient=self.custom_gradient,
        )

    def step(self, input, hx=None):
        """One step of the cell with these parameters: `cell(input, hx)`, `input: [batch, input_size]`."""
        return stack.cell_step(
            self.kind, self._weights(), input, hx, input_size=self.input_size, dtype=self.dtype, name=self.cell_name
        )
