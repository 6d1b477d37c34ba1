"""parity: where PyTorch and flaxseq meet. Weight conversion both ways and comparisons."""

import parity.layers  # noqa: F401  (registers the layer and cell rules)
from parity.compare import Report, TensorDiff, compare
from parity.convert import Rule, copy_rule, from_state_dict, from_torch, register, to_state_dict, to_torch

__all__ = [
    "Report", "Rule", "TensorDiff", "compare", "copy_rule", "from_state_dict", "from_torch", "register",
    "to_state_dict", "to_torch",
]
