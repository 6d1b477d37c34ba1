"""`flaxseq.CellScan` and `flaxseq.nnx.CellScan`: a cell stepped over time is the per-step loop
of that cell, values and every gradient, in float64; PyTorch's hand-stepped `nn.LSTMCell`s are
its twin by name; its program does not grow with the time length; `flax`'s `RNN` refuses a
flaxseq cell naming the adapter; bad arguments are refused with the cells' messages."""

import re
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import flaxseq
import flaxseq.nnx

F64 = jnp.float64
INPUT, HIDDEN, TIME, BATCH = 3, 5, 4, 2
TOL = dict(rtol=1e-12, atol=1e-12)


def mgu_step(gx, gh, h):
    f = jax.nn.sigmoid(gx[0] + gh[0])
    n = jnp.tanh(gx[1] + f * gh[1])
    return (1 - f) * n + f * h


MGU = flaxseq.CellKind("MGU", 2, mgu_step)  # no StepGradient: JAX differentiates its step

# name -> (linen cell, NNX cell given rngs); float64 parameters
CELLS = {
    "rnn_tanh": (lambda: flaxseq.RNNCell(INPUT, HIDDEN, param_dtype=F64),
                 lambda r: flaxseq.nnx.RNNCell(INPUT, HIDDEN, rngs=r, param_dtype=F64)),
    "rnn_relu": (lambda: flaxseq.RNNCell(INPUT, HIDDEN, nonlinearity="relu", param_dtype=F64),
                 lambda r: flaxseq.nnx.RNNCell(INPUT, HIDDEN, nonlinearity="relu", rngs=r, param_dtype=F64)),
    "lstm": (lambda: flaxseq.LSTMCell(INPUT, HIDDEN, param_dtype=F64),
             lambda r: flaxseq.nnx.LSTMCell(INPUT, HIDDEN, rngs=r, param_dtype=F64)),
    "gru": (lambda: flaxseq.GRUCell(INPUT, HIDDEN, param_dtype=F64),
            lambda r: flaxseq.nnx.GRUCell(INPUT, HIDDEN, rngs=r, param_dtype=F64)),
    "user_kind": (lambda: flaxseq.RNNCellBase(MGU, INPUT, HIDDEN, param_dtype=F64),
                  lambda r: flaxseq.nnx.RNNCellBase(MGU, INPUT, HIDDEN, rngs=r, param_dtype=F64)),
}
CELL_STATE = {"lstm"}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def data(name, time_steps=TIME, batch=BATCH, seed=0):
    """`x [time, batch, input]`, the cell's `hx`, and weights for a scalar loss over both results."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((time_steps, batch, INPUT)))
    h = jnp.asarray(rng.standard_normal((batch, HIDDEN)))
    hx = (h, jnp.asarray(rng.standard_normal((batch, HIDDEN)))) if name in CELL_STATE else h
    w_out = jnp.asarray(rng.standard_normal((time_steps, batch, HIDDEN)))
    w_final = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), hx)
    return x, hx, (w_out, w_final)


def hidden(carry):
    return carry[0] if isinstance(carry, tuple) else carry


def loop(cell_call, x, hx):
    """The hand-stepped loop: `for t in range(T): hx = cell(x[t], hx)`, each step's `h` kept."""
    outputs = []
    for t in range(x.shape[0]):
        hx = cell_call(x[t], hx)
        outputs.append(hidden(hx))
    return jnp.stack(outputs), hx


def value_and_grads(run, weights, *args):
    """`(outputs, final)` of `run(*args)` and the gradients of a weighted sum of both, w.r.t. every arg."""
    w_out, w_final = weights

    def loss(*args):
        outputs, final = run(*args)
        total = jnp.sum(w_out * outputs) + sum(jnp.sum(w * f) for w, f in zip(jax.tree.leaves(w_final),
                                                                               jax.tree.leaves(final), strict=True))
        return total, (outputs, final)

    (_, results), grads = jax.value_and_grad(loss, argnums=tuple(range(len(args))), has_aux=True)(*args)
    return results, grads


def assert_trees_close(got, want, **tol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, **(tol or TOL))


def nnx_twin(name, params):
    """The NNX cell of `name` holding `params` (a linen cell's)."""
    cell = CELLS[name][1](nnx.Rngs(0))
    state = nnx.state(cell, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(cell, state)
    return cell


def init(scan, x):
    """`scan`'s parameters, declared (in `setup`) without running the loop: through `step`."""
    return scan.init(jax.random.key(0), x[0], method="step")["params"]


def test_parameters_are_the_cells():
    """`CellScan(cell).init(key, x)` draws what `cell.init(key, x[0])` draws, under the same names."""
    cell = CELLS["lstm"][0]()
    x, _, _ = data("lstm")
    params = jax.jit(flaxseq.CellScan(cell).init)(jax.random.key(0), x)["params"]
    assert_trees_close(params, cell.init(jax.random.key(0), x[0])["params"], rtol=0, atol=0)


@pytest.mark.parametrize("name", CELLS)
def test_equals_the_loop_of_its_cell(name):
    """Linen's and NNX's CellScan against `for t in range(T): hx = cell(x[t], hx)` with the same cell."""
    cell = CELLS[name][0]()
    scan = flaxseq.CellScan(cell)
    x, hx, weights = data(name)
    params = init(scan, x)
    assert_trees_close(params, cell.init(jax.random.key(0), x[0])["params"], rtol=0, atol=0)

    def run_loop(p, x, hx):
        return loop(lambda x_t, h: cell.apply({"params": p}, x_t, h), x, hx)

    def run_scan(p, x, hx):
        return scan.apply({"params": p}, x, hx)

    nnx_cell = nnx_twin(name, params)
    nnx_scan = flaxseq.nnx.CellScan(nnx_cell)
    # the cell's own variables, at the CellScan's level
    scan_params = nnx.to_flat_state(nnx.state(nnx_scan, nnx.Param))
    assert [path for path, _ in scan_params] == [path for path, _ in nnx.to_flat_state(nnx.state(nnx_cell))]
    assert all(variable is getattr(nnx_cell, path[0]) for path, variable in scan_params)
    graphdef, state = nnx.split(nnx_scan, nnx.Param)

    def run_nnx(state, x, hx):
        return nnx.merge(graphdef, state)(x, hx)

    @jax.jit  # one program for the three
    def results(params, state, x, hx):
        return [value_and_grads(run, weights, p, x, hx)
                for run, p in [(run_loop, params), (run_scan, params), (run_nnx, state)]]

    want, got, got_nnx = results(params, state, x, hx)
    assert_trees_close(got, want)
    assert got[0][0].shape == (TIME, BATCH, HIDDEN)
    assert_trees_close(got_nnx[0], want[0])
    assert_trees_close([nnx.to_pure_dict(got_nnx[1][0]), *got_nnx[1][1:]], list(want[1]))


def test_step_is_the_cell_with_the_same_parameters():
    x, hx, _ = data("lstm")
    cell = CELLS["lstm"][0]()
    scan = flaxseq.CellScan(cell)
    params = cell.init(jax.random.key(0), x[0])
    assert_trees_close(scan.apply(params, x[0], hx, method="step"), cell.apply(params, x[0], hx), rtol=0, atol=0)
    nnx_cell = nnx_twin("lstm", params["params"])
    assert_trees_close(flaxseq.nnx.CellScan(nnx_cell).step(x[0], hx), nnx_cell(x[0], hx), rtol=0, atol=0)


def test_jax_differentiation_of_the_loop():
    """`custom_gradient=False`: JAX differentiates the loop, to the same gradient, in forward mode too."""
    x, hx, weights = data("gru")
    scan = flaxseq.CellScan(CELLS["gru"][0]())
    params = init(scan, x)

    def grads(module):
        return jax.jit(lambda *a: value_and_grads(lambda p, x, hx: module.apply({"params": p}, x, hx), weights, *a))(
            params, x, hx
        )

    want = grads(scan)
    assert_trees_close(grads(scan.clone(custom_gradient=False)), want)
    # forward mode through NNX's: the loss's tangent along v is <d loss / dx, v>
    plain = flaxseq.nnx.CellScan(nnx_twin("gru", params), custom_gradient=False)
    w_out, w_final = weights

    def loss(x):
        outputs, final = plain(x, hx)
        return jnp.sum(w_out * outputs) + jnp.sum(w_final * final)

    v = jnp.asarray(np.random.default_rng(5).standard_normal(x.shape))
    _, tangent = jax.jit(lambda x, v: jax.jvp(loss, (x,), (v,)))(x, v)
    np.testing.assert_allclose(tangent, jnp.sum(want[1][1] * v), **TOL)


def unbatch(tree):
    """Batch entry 0 of `[time, batch, ...]` outputs and `[batch, ...]` carries."""
    return jax.tree.map(lambda a: a[:, 0] if a.ndim == 3 else a[0], tree)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_unbatched_input(name):
    """`x: [time, features]` and `hx` without a batch axis give `[time, hidden]` and the carry
    unbatched, the batched results' entry; `hx=None` is zeros."""
    x, hx, _ = data(name, batch=1)
    scan = flaxseq.CellScan(CELLS[name][0]())
    params = {"params": init(scan, x)}
    nnx_scan = flaxseq.nnx.CellScan(nnx_twin(name, params["params"]))
    zeros = jax.tree.map(jnp.zeros_like, hx)

    @jax.jit
    def results(params, x, hx, zeros):
        return scan.apply(params, x, hx), scan.apply(params, unbatch(x)), scan.apply(params, x, zeros), nnx_scan(
            *unbatch((x, hx))
        )

    batched, unbatched_zeros, batched_zeros, unbatched = results(params, x, hx, zeros)
    assert unbatched[0].shape == (TIME, HIDDEN)
    assert_trees_close(unbatched, unbatch(batched), rtol=0, atol=0)
    assert_trees_close(unbatched_zeros, unbatch(batched_zeros), rtol=0, atol=0)


class TorchTwoCells(torch.nn.Module):
    """A PyTorch model stepping two cells by hand, the second (without biases) fed by the first's `h`."""

    def __init__(self):
        super().__init__()
        self.cell1 = torch.nn.LSTMCell(INPUT, HIDDEN)
        self.cell2 = torch.nn.LSTMCell(HIDDEN, 4, bias=False)

    def forward(self, x, hx1, hx2):
        outputs = []
        for t in range(x.shape[0]):
            hx1 = self.cell1(x[t], hx1)
            hx2 = self.cell2(hx1[0], hx2)
            outputs.append(hx2[0])
        return torch.stack(outputs), hx2


class LinenTwoCells(nn.Module):
    def setup(self):
        self.cell1 = flaxseq.CellScan(flaxseq.LSTMCell(INPUT, HIDDEN, param_dtype=F64))
        self.cell2 = flaxseq.CellScan(flaxseq.LSTMCell(HIDDEN, 4, bias=False, param_dtype=F64))

    def __call__(self, x, hx1, hx2):
        h1, _ = self.cell1(x, hx1)
        return self.cell2(h1, hx2)


class NNXTwoCells(nnx.Module):
    def __init__(self, rngs):
        self.cell1 = flaxseq.nnx.CellScan(flaxseq.nnx.LSTMCell(INPUT, HIDDEN, rngs=rngs, param_dtype=F64))
        self.cell2 = flaxseq.nnx.CellScan(flaxseq.nnx.LSTMCell(HIDDEN, 4, bias=False, rngs=rngs, param_dtype=F64))

    def __call__(self, x, hx1, hx2):
        h1, _ = self.cell1(x, hx1)
        return self.cell2(h1, hx2)


def test_torch_hand_stepped_cells_are_the_twin_of_two_cell_scans():
    """50 steps of two `nn.LSTMCell`s by hand against two CellScans, weights copied by the
    state_dict's names: outputs, final states and gradients (every weight, the input, the
    initial states) in float64."""
    torch.manual_seed(0)
    model = TorchTwoCells().double()
    time_steps, batch = 50, 3
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s) for s in [(time_steps, batch, INPUT), (batch, HIDDEN), (batch, HIDDEN),
                                                (batch, 4), (batch, 4), (time_steps, batch, 4), (batch, 4)]]
    x, h1, c1, h2, c2, w_out, w_h = arrays
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, h1, c1, h2, c2)]
    outputs, (h_n, c_n) = model(tensors[0], tuple(tensors[1:3]), tuple(tensors[3:5]))
    (outputs * torch.tensor(w_out)).sum().add((h_n * torch.tensor(w_h)).sum()).add(c_n.sum()).backward()
    state_dict = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    torch_grads = {k: v.grad.numpy() for k, v in model.named_parameters()}
    torch_input_grads = [t.grad.numpy() for t in tensors]

    def loss(run):
        def value(params, x, h1, c1, h2, c2):
            outputs, (h_n, c_n) = run(params, x, (h1, c1), (h2, c2))
            return jnp.sum(w_out * outputs) + jnp.sum(w_h * h_n) + jnp.sum(c_n), (outputs, h_n, c_n)

        return jax.jit(jax.value_and_grad(value, argnums=tuple(range(6)), has_aux=True))

    want = (outputs.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy())
    inputs = [jnp.asarray(a) for a in (x, h1, c1, h2, c2)]

    linen = LinenTwoCells()
    shapes = flatten_dict(jax.eval_shape(linen.init, jax.random.key(0), inputs[0], None, None)["params"], sep=".")
    assert {k: v.shape for k, v in shapes.items()} == {k: v.shape for k, v in state_dict.items()}
    params = unflatten_dict({k: jnp.asarray(v) for k, v in state_dict.items()}, sep=".")
    (_, got), grads = loss(lambda p, *a: linen.apply({"params": p}, *a))(params, *inputs)
    assert_trees_close(got, want)
    assert_trees_close(flatten_dict(grads[0], sep="."), torch_grads)
    assert_trees_close(list(grads[1:]), torch_input_grads)

    model_nnx = nnx.eval_shape(lambda: NNXTwoCells(nnx.Rngs(0)))  # shapes only, filled from the state_dict
    paths = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(model_nnx, nnx.Param))}
    assert {k: v.shape for k, v in paths.items()} == {k: v.shape for k, v in state_dict.items()}
    graphdef, state = nnx.split(model_nnx, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    (_, got), grads = loss(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, *inputs)
    assert_trees_close(got, want)
    assert_trees_close(flatten_dict(nnx.to_pure_dict(grads[0]), sep="."), torch_grads)
    assert_trees_close(list(grads[1:]), torch_input_grads)


def test_program_does_not_grow_with_time():
    """A Python loop of T cell calls is T copies of the step under `jit`; CellScan is one loop:
    the same program at T=10 and T=999, compiled in about the same time."""
    scan = flaxseq.CellScan(flaxseq.LSTMCell(INPUT, HIDDEN, param_dtype=F64))
    params = scan.init(jax.random.key(0), jnp.zeros((1, BATCH, INPUT)))["params"]

    def grad(params, x):
        return jax.grad(lambda p: jnp.sum(scan.apply({"params": p}, x)[0]))(params)

    def compile_time(time_steps):
        lowered = jax.jit(grad).lower(params, jnp.zeros((time_steps, BATCH, INPUT)))
        start = time.perf_counter()
        lowered.compile()
        return time.perf_counter() - start, lowered.as_text()

    short, short_text = compile_time(10)
    long, long_text = compile_time(999)
    # the same operations, in the same order: no step is copied per time step
    assert re.findall(r"stablehlo\.\w+", short_text) == re.findall(r"stablehlo\.\w+", long_text)
    assert long < 3 * max(short, 0.5), (short, long)  # a floor: both are well under a second


@pytest.mark.parametrize("name", CELLS)
def test_flax_rnn_refuses_a_flaxseq_cell_naming_the_adapter(name):
    linen_cell, nnx_cell = CELLS[name]
    cell = linen_cell()
    message = (f"{type(cell).__name__} is a flaxseq cell, called as PyTorch's cell(input, hx) -> hx', not as "
               "flax's cell(carry, x) -> (carry, y), so flax.linen.RNN cannot run it; run it over time with "
               "flaxseq.CellScan(cell)")
    with pytest.raises(TypeError, match=re.escape(message)):
        nn.RNN(cell).init(jax.random.key(0), jnp.zeros((BATCH, TIME, INPUT)))
    with pytest.raises(TypeError, match=re.escape("so flax.nnx.RNN cannot run it; run it over time with "
                                                  "flaxseq.nnx.CellScan(cell)")):
        nnx.RNN(nnx_cell(nnx.Rngs(0)))(jnp.zeros((BATCH, TIME, INPUT)))


LSTM_ERRORS = [
    (jnp.zeros((TIME, BATCH, 2)), None, ValueError,
     "CellScan(LSTMCell): input.size(-1) must be equal to input_size. Expected 3, got 2"),
    (jnp.zeros((BATCH, INPUT)).sum(0), None, ValueError,
     "CellScan(LSTMCell): Expected input to be 2D (unbatched) or 3D (batched), got 1D array of shape (3,) instead"),
    (jnp.zeros((1, TIME, BATCH, INPUT)), None, ValueError, "Expected input to be 2D (unbatched) or 3D (batched), "
     "got 4D array of shape (1, 4, 2, 3) instead"),
    (jnp.zeros((TIME, BATCH, INPUT)), jnp.zeros((BATCH, HIDDEN)), TypeError,
     "hx must be a tuple (h_0, c_0) for CellScan(LSTMCell), got ArrayImpl"),
    (jnp.zeros((TIME, BATCH, INPUT)), (jnp.zeros((3, HIDDEN)), jnp.zeros((BATCH, HIDDEN))), ValueError,
     "Expected hx[0] size (2, 5), got (3, 5)"),
    (jnp.zeros((TIME, BATCH, INPUT)), (jnp.zeros((BATCH, HIDDEN)), jnp.zeros((BATCH, 4))), ValueError,
     "Expected hx[1] size (2, 5), got (2, 4)"),
    (jnp.zeros((TIME, INPUT)), (jnp.zeros((BATCH, HIDDEN)),) * 2, ValueError, "Expected hx[0] size (5,), got (2, 5)"),
    (jnp.zeros((TIME, BATCH, INPUT), jnp.int32), None, TypeError,
     "input must be a floating-point array, got dtype int32"),
]
GRU_ERRORS = [
    (jnp.zeros((TIME, BATCH, INPUT)), (jnp.zeros((BATCH, HIDDEN)),) * 2, TypeError,
     "hx must be an array for CellScan(GRUCell), got tuple"),
    (jnp.zeros((TIME, BATCH, INPUT)), jnp.zeros((BATCH, 4)), ValueError, "Expected hx size (2, 5), got (2, 4)"),
]


@pytest.mark.parametrize("front_end", ["linen", "nnx"])
@pytest.mark.parametrize("name, x, hx, error, message",
                         [("lstm", *case) for case in LSTM_ERRORS] + [("gru", *case) for case in GRU_ERRORS])
def test_bad_arguments(front_end, name, x, hx, error, message):
    with pytest.raises(error, match=re.escape(message)):
        if front_end == "linen":
            flaxseq.CellScan(CELLS[name][0]()).init(jax.random.key(0), x, hx)
        else:
            flaxseq.nnx.CellScan(CELLS[name][1](nnx.Rngs(0)))(x, hx)


def test_cell_must_be_a_flaxseq_cell():
    with pytest.raises(TypeError, match=re.escape("cell must be a flaxseq linen cell (flaxseq.RNNCell, LSTMCell, "
                                                  "GRUCell or RNNCellBase), got flax.linen.recurrent.LSTMCell")):
        flaxseq.CellScan(nn.LSTMCell(4))
    with pytest.raises(TypeError, match=re.escape("got flaxseq.nnx.recurrent.GRUCell (an NNX cell: its scan is "
                                                  "flaxseq.nnx.CellScan)")):
        flaxseq.CellScan(flaxseq.nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=re.escape("cell must be a flaxseq NNX cell (flaxseq.nnx.RNNCell, LSTMCell, "
                                                  "GRUCell or RNNCellBase), got flaxseq.cells.LSTMCell (a linen "
                                                  "cell: its scan is flaxseq.CellScan)")):
        flaxseq.nnx.CellScan(flaxseq.LSTMCell(3, 4))
