"""parity: where PyTorch and flaxseq meet. Weight conversion both ways and comparisons."""

import parity.attention  # noqa: F401
import parity.classifiers  # noqa: F401  (registers the models' rules)
import parity.layers  # noqa: F401  (registers the layer and cell rules)
import parity.manual_rnn  # noqa: F401
import parity.modules  # noqa: F401  (torch.nn's common modules)
import parity.seq2seq  # noqa: F401
import parity.tagger  # noqa: F401
from parity.compare import Report, TensorDiff, compare
from parity.convert import (
    Rule,
    copy_rule,
    from_state_dict,
    from_torch,
    module_dtype,
    register,
    to_state_dict,
    to_torch,
    torch_dtype,
)

__all__ = [
    "Report", "Rule", "TensorDiff", "compare", "copy_rule", "from_state_dict", "from_torch", "register",
    "to_state_dict", "to_torch", "module_dtype", "torch_dtype",
]
