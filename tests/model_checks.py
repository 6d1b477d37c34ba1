"""Checks shared by the model tests: parity reports, round trips, initialisation, jit."""

import jax
import numpy as np
import torch

import parity


def check_report(case, seed: int = 1, input_names: tuple[str, ...] = ()) -> parity.Report:
    """`case.run(seed)` passes, in the case's dtype, comparing every parameter and `input_names`."""
    report = case.run(seed=seed)
    assert report.passed, f"{case.label()} {case.dtype}:\n" + "\n".join(report.failures())
    assert report.output_dtypes and all(dt == np.dtype(case.dtype) for dt in report.output_dtypes)
    names = {d.name for d in report.gradients}
    params = {f"d{name}" for name, _ in case.torch_module().named_parameters()}
    assert names == params | {f"d{name}" for name in input_names}
    return report


def torch_config(module: torch.nn.Module) -> tuple[str, dict]:
    """A PyTorch model's configuration: its repr (every submodule's settings) and its attributes."""
    attributes = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}
    return repr(module), attributes


def check_round_trips(torch_module: torch.nn.Module, flax_module) -> None:
    """torch -> flax -> torch and flax -> torch -> flax reproduce every tensor exactly, its dtype,
    and the configuration; `flax_module` is the twin that `from_torch` must build."""
    flax_twin, variables = parity.from_torch(torch_module)
    assert flax_twin == flax_module
    back = parity.to_torch(flax_twin, variables)
    assert type(back) is type(torch_module)
    assert torch_config(back) == torch_config(torch_module)
    state, state_back = torch_module.state_dict(), back.state_dict()
    assert list(state_back) == list(state)
    for key, value in state.items():
        assert state_back[key].dtype == value.dtype, key
        assert torch.equal(state_back[key], value), key

    flax_back, variables_back = parity.from_torch(parity.to_torch(flax_module, variables))
    assert flax_back == flax_module
    flat, flat_back = jax.tree.leaves_with_path(variables), jax.tree.leaves_with_path(variables_back)
    assert [path for path, _ in flat_back] == [path for path, _ in flat]
    for (path, value), (_, value_back) in zip(flat, flat_back, strict=True):
        assert value_back.dtype == value.dtype, path
        np.testing.assert_array_equal(value_back, value, err_msg=str(path))


def check_init_like_torch(torch_module: torch.nn.Module, flax_module, variables) -> None:
    """flaxseq's initialisation draws every tensor as PyTorch's does by default: the same names,
    shapes and dtypes, and for tensors of 100 elements or more the same spread (std within 20%)
    and range (N(0, 1) embeddings aside, |w| within PyTorch's uniform bound)."""
    state = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    flax_state = parity.to_state_dict(flax_module, variables)
    assert sorted(flax_state) == sorted(state)
    for key, expected in state.items():
        value = flax_state[key]
        assert value.shape == expected.shape and value.dtype == expected.dtype, key
        if expected.size >= 100:
            assert 0.8 < value.std() / expected.std() < 1.25, key
            if not key.startswith("embedding"):
                bound = expected.std() * np.sqrt(3) * 1.1  # U(-b, b) has std b / sqrt(3)
                assert np.abs(value).max() <= bound, key


def check_jit(flax_module, variables, *args, **kwargs) -> None:
    """`jax.jit` of `apply` (arrays traced, lengths included) gives the eager result (float64)."""
    eager = flax_module.apply(variables, *args, **kwargs)
    jitted = jax.jit(lambda v, a, k: flax_module.apply(v, *a, **k))(variables, args, kwargs)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
