"""flaxseq.nnx: PyTorch's recurrent layers, cells and basic modules in Flax NNX.

Modules read like `torch.nn`: PyTorch's constructor arguments plus keyword-only `rngs`,
parameters as attributes with PyTorch's names and shapes, PyTorch's forward, training mode
when new and `model.eval()` / `model.train()`. The recurrent arithmetic is the framework-free
core's (`flaxseq.stack`), shared with the linen layers.

>>> from flax import nnx
>>> import flaxseq.nnx
>>> lstm = flaxseq.nnx.LSTM(10, 20, num_layers=2, batch_first=True, rngs=nnx.Rngs(0))
>>> output, (h_n, c_n) = lstm(jnp.ones((32, 5, 10)))  # [32, 5, 20], [2, 32, 20], [2, 32, 20]
"""

from flaxseq.nnx.basic import GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, Sequential, Sigmoid, Tanh
from flaxseq.nnx.cell_scan import CellScan
from flaxseq.nnx.classifiers import TextClassifier
from flaxseq.nnx.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase

__all__ = [
    "GRU", "LSTM", "RNN", "CellScan", "Embedding", "GRUCell", "LSTMCell", "Linear", "RNNBase", "RNNCell",
    "RNNCellBase", "TextClassifier",
]
__all__ += ["Dropout", "GELU", "Identity", "LayerNorm", "ReLU", "Sequential", "Sigmoid", "Tanh"]
