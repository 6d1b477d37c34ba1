"""`ManualRNNCell` and `ManualRNN` against the PyTorch references: parity, conversion, jit, errors."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_checks import check_init_like_torch, check_jit, check_report, check_round_trips

import flaxseq
import parity
import torch_ref
from parity.manual_rnn import ManualRNNCase, model_cases


@pytest.mark.parametrize("case", model_cases(), ids=lambda c: f"{c.label()} {c.dtype}")
def test_parity(case):
    inputs = ("x", "h_prev") if case.model == "ManualRNNCell" else ("x",)
    report = check_report(case, input_names=inputs)
    if case.model == "ManualRNN":  # fc is unused: zero gradient (PyTorch: None)
        unused = [d for d in report.gradients if d.name.startswith("dfc.")]
        assert len(unused) == 2 and all(d.max_abs == 0 for d in unused)


def test_outputs_are_the_loop_over_the_cell():
    """ManualRNN's outputs are the cell applied step by step from zeros; `h` is the last one."""
    model = flaxseq.ManualRNN(4, 3, 2, param_dtype=jnp.float64)
    x = np.random.default_rng(0).standard_normal((2, 5, 4))
    variables = model.init(jax.random.key(0), x)
    outputs, h = model.apply(variables, x)
    cell = flaxseq.ManualRNNCell(4, 3, param_dtype=jnp.float64)
    cell_variables = {"params": variables["params"]["rnn_cell"]}
    state = jnp.zeros((2, 3))
    for t in range(5):
        state = cell.apply(cell_variables, x[:, t], state)
        np.testing.assert_allclose(outputs[:, t], state, rtol=1e-14)
    np.testing.assert_array_equal(h, outputs[:, -1])


def test_init_creates_unused_fc_and_matches_torch():
    torch.manual_seed(0)
    reference = torch_ref.ManualRNN(30, 40, 20)
    model = flaxseq.ManualRNN(30, 40, 20)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1, 30)))
    assert set(variables["params"]) == {"rnn_cell", "fc"}
    check_init_like_torch(reference, model, variables)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trips(dtype):
    torch.manual_seed(0)
    reference = torch_ref.ManualRNN(4, 3, 2).to(getattr(torch, dtype))
    check_round_trips(reference, flaxseq.ManualRNN(4, 3, 2, param_dtype=jnp.dtype(dtype)))
    check_round_trips(reference.rnn_cell, flaxseq.ManualRNNCell(4, 3, param_dtype=jnp.dtype(dtype)))


def test_jit():
    case = ManualRNNCase("ManualRNN")
    torch.manual_seed(0)
    model, variables = parity.from_torch(case.torch_module().double())
    (x,), _ = case.inputs(np.random.default_rng(0))
    check_jit(model, variables, x)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((2, 4)), ValueError, r"x must have shape \[batch, time, input_size\], got a 2-D array"),
        (np.zeros((2, 5, 3, 4)), ValueError, r"got a 4-D array"),
        (np.zeros((2, 5, 7)), ValueError, r"Expected x size \(2, 5, 4\), got \(2, 5, 7\)"),
        (np.zeros((2, 0, 4)), ValueError, "x must have at least one time step"),
        (np.zeros((2, 5, 4), np.int32), TypeError, "x must be a floating-point array, got dtype int32"),
    ],
)
def test_bad_input(x, error, match):
    model = flaxseq.ManualRNN(4, 3, 2)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1, 4)))
    with pytest.raises(error, match=match):
        model.apply(variables, x)


def test_bad_cell_input():
    cell = flaxseq.ManualRNNCell(4, 3)
    variables = cell.init(jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Expected h_prev size \(2, 3\), got \(2, 5\)"):
        cell.apply(variables, jnp.zeros((2, 4)), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"x must have shape \[batch, input_size\], got a 1-D array"):
        cell.apply(variables, jnp.zeros(4), jnp.zeros((2, 3)))


def test_flax_rnn_refuses_the_cell_naming_the_model_that_loops_it():
    """`flax.linen.RNN` calls a cell as `(carry, x) -> (carry, y)`; this one is `(x, h_prev) -> h`."""
    message = ("ManualRNNCell is a flaxseq cell, called as cell(x, h_prev) -> h, not as flax's cell(carry, x) -> "
               "(carry, y), so flax.linen.RNN cannot run it; run it over time with flaxseq.ManualRNN(")
    with pytest.raises(TypeError, match=re.escape(message)):
        nn.RNN(flaxseq.ManualRNNCell(4, 3)).init(jax.random.key(0), jnp.zeros((2, 5, 4)))


def test_bad_config():
    with pytest.raises(ValueError, match="hidden_size must be greater than zero, got 0"):
        flaxseq.ManualRNN(4, 0, 2)
    with pytest.raises(TypeError, match="output_size should be of type int, got: float"):
        flaxseq.ManualRNN(4, 3, 2.0)
