"""flaxseq: PyTorch's recurrent networks in JAX/Flax, with the same parameters and results."""

import importlib.metadata as _metadata

from flaxseq import basic, kinds, losses, optim
from flaxseq.attention import Attention, AttnDecoder, Seq2SeqAttention
from flaxseq.cell_scan import CellScan
from flaxseq.cells import GRUCell, LSTMCell, RNNCell, RNNCellBase
from flaxseq.classifiers import BiLSTM, LSTMClassifier, PackedLSTM, TextClassifier
from flaxseq.kinds import CellKind, StepGradient
from flaxseq.layers import GRU, LSTM, RNN, RNNBase
from flaxseq.manual_rnn import ManualRNN, ManualRNNCell
from flaxseq.seq2seq import Decoder, Encoder, Seq2Seq
from flaxseq.tagger import GRUTagger
from flaxseq.torch_file import load_torch_state_dict

__all__ = ["CellKind", "GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]
__all__ += ["CellScan", "StepGradient", "basic", "kinds", "losses", "optim"]
__all__ += ["BiLSTM", "GRUTagger", "LSTMClassifier", "ManualRNN", "ManualRNNCell", "PackedLSTM", "TextClassifier"]
__all__ += ["Attention", "AttnDecoder", "Decoder", "Encoder", "Seq2Seq", "Seq2SeqAttention"]
__all__ += ["load_torch_state_dict"]
try:
    __version__ = _metadata.version("flaxseq")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

from flaxseq.tasks.saved import load_run  # noqa: E402  (after __version__: the run folder records it)

__all__ += ["load_run"]
