"""Data for training: text -> vocabulary -> padded ids and lengths -> batches. Numpy only.

    from flaxseq import data

    texts, labels = data.load_bbc_news()
    train, valid, test = data.split_indices(len(texts), (0.8, 0.1, 0.1), seed=0)
    train_tokens = [data.tokenize(texts[i]) for i in train]
    vocab = data.Vocab.build(train_tokens, min_freq=2, max_size=20_000)
    ids, lengths = data.encode_sequences(train_tokens, vocab, max_length=200)   # [n, 200], [n]
    label_ids, classes = data.encode_labels([labels[i] for i in train])
    for ids_b, lengths_b, labels_b in data.BatchIterator(ids, lengths, label_ids, batch_size=32, seed=0):
        ...

See each module's docstring: `vocab`, `encode`, `batching`, `splits`, `readers`, `datasets`.
"""

from flaxseq.data.batching import BatchIterator
from flaxseq.data.datasets import load_bbc_news, load_cmudict
from flaxseq.data.encode import encode_labels, encode_sequences, encode_tagged, encode_texts, tokenize
from flaxseq.data.readers import read_conllu, read_folder, read_pronunciations, read_table, read_text
from flaxseq.data.splits import split_indices
from flaxseq.data.vocab import EOS, PAD, PAD_ID, SOS, UNK, UNK_ID, Vocab, count_tokens, replace_rare

__all__ = [
    "EOS", "PAD", "PAD_ID", "SOS", "UNK", "UNK_ID",
    "BatchIterator", "Vocab",
    "count_tokens", "encode_labels", "encode_sequences", "encode_tagged", "encode_texts",
    "load_bbc_news", "load_cmudict",
    "read_conllu", "read_folder", "read_pronunciations", "read_table", "read_text",
    "replace_rare", "split_indices", "tokenize",
]
