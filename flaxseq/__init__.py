"""flaxseq: PyTorch's recurrent networks in JAX/Flax, with the same parameters and results."""

from flaxseq.cells import GRUCell, LSTMCell, RNNCell
from flaxseq.layers import GRU, LSTM, RNN

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
__version__ = "0.1.0"
