"""torch_ref: the PyTorch references of flaxseq's architectures, under the same names.

The layers and cells are PyTorch's own; the tutorial's models follow in their own files.
"""

from torch.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
