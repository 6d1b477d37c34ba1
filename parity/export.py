"""Save flaxseq weights as a PyTorch state_dict file (`flaxseq export`)."""

import pathlib

import torch

from parity.convert import to_torch


def save_torch_state_dict(flax_module, variables, path: pathlib.Path) -> torch.nn.Module:
    """Convert to the PyTorch twin and `torch.save` its state_dict to `path`; returns the twin."""
    torch_module = to_torch(flax_module, variables)
    torch.save(torch_module.state_dict(), path)
    return torch_module
