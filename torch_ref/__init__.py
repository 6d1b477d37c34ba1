"""torch_ref: the PyTorch references of flaxseq's architectures, under the same names.

The layers and cells are PyTorch's own; the tutorial's models follow in their own files.
"""

from torch.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

from torch_ref.attention import Attention, AttnDecoder, Seq2SeqAttention
from torch_ref.classifiers import BiLSTM, LSTMClassifier, PackedLSTM, TextClassifier
from torch_ref.manual_rnn import ManualRNN, ManualRNNCell
from torch_ref.seq2seq import Decoder, Encoder, Seq2Seq
from torch_ref.tagger import GRUTagger

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]
__all__ += ["BiLSTM", "GRUTagger", "LSTMClassifier", "ManualRNN", "ManualRNNCell", "PackedLSTM", "TextClassifier"]
__all__ += ["Attention", "AttnDecoder", "Decoder", "Encoder", "Seq2Seq", "Seq2SeqAttention"]
