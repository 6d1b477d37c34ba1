"""Data for training: text -> vocabulary -> padded ids and lengths -> batches. Numpy only.

Classification (BBC News):

    from flaxseq import data

    texts, labels = data.load_bbc_news()
    train, valid, test = data.split_indices(len(texts), (0.8, 0.1, 0.1), seed=0)
    train_tokens = [data.tokenize(texts[i]) for i in train]
    vocab = data.Vocab.build(train_tokens)                          # every training word
    tokens = data.replace_rare(train_tokens, max_count=1, probability=0.5, seed=0)   # so <unk> is learned
    ids, lengths = data.encode_sequences(tokens, vocab, max_length=200)              # [1780, 200], [1780]
    label_ids, classes = data.encode_labels(labels)                                   # [2225], 5 class names
    batches = data.BatchIterator(ids, lengths, label_ids[train], batch_size=32, seed=0)
    for epoch in range(batches.epoch, num_epochs):
        for ids_b, lengths_b, labels_b in batches:                  # [32, 200], [32], [32]
            ...

To draw new replacements each epoch, encode again and carry the position over:
`batches = data.BatchIterator.from_state(batches.state(), new_ids, new_lengths, label_ids[train])`.

Tagging (Universal Dependencies, CoNLL-U):

    sentences = data.read_conllu("en_ewt-ud-dev.conllu")
    words, tags = [w for w, _ in sentences], [t for _, t in sentences]
    word_vocab, tag_vocab = data.Vocab.build(words, min_freq=2), data.Vocab.build(tags)
    word_ids, tag_ids, lengths = data.encode_tagged(words, tags, word_vocab, tag_vocab, max_length=64)

Unknown words by their spelling (`shapes`): a vocabulary that holds shape tokens such as
`<unk:Aa-s>` encodes an unseen "Fairbanks" as its shape instead of `<unk>`:
`data.encode_tagged(data.known_or_shape(words, vocab), tags, vocab, tag_vocab, 64)`.

Sequence to sequence (CMUdict, letters to phonemes):

    entries = data.load_cmudict()
    letters = data.Vocab.build([list(word) for word, _ in entries])
    phonemes = data.Vocab.build([p for _, p in entries], specials=(data.SOS, data.EOS))
    source, source_lengths = data.encode_texts([w for w, _ in entries], letters, 32, tokenizer=list)
    target, target_lengths = data.encode_sequences([p for _, p in entries], phonemes, 32, sos=True, eos=True)

See each module's docstring: `vocab`, `shapes`, `encode`, `batching`, `splits`, `readers`, `datasets`.
"""

from flaxseq.data.batching import BatchIterator
from flaxseq.data.datasets import load_bbc_news, load_cmudict
from flaxseq.data.encode import encode_labels, encode_sequences, encode_tagged, encode_texts, tokenize
from flaxseq.data.readers import read_conllu, read_folder, read_pronunciations, read_table, read_text
from flaxseq.data.shapes import known_or_shape, word_shape
from flaxseq.data.splits import split_indices
from flaxseq.data.vocab import EOS, PAD, PAD_ID, SOS, UNK, UNK_ID, Vocab, count_tokens, replace_rare

__all__ = [
    "EOS", "PAD", "PAD_ID", "SOS", "UNK", "UNK_ID",
    "BatchIterator", "Vocab",
    "count_tokens", "encode_labels", "encode_sequences", "encode_tagged", "encode_texts",
    "load_bbc_news", "load_cmudict",
    "read_conllu", "read_folder", "read_pronunciations", "read_table", "read_text",
    "known_or_shape", "replace_rare", "split_indices", "tokenize", "word_shape",
]
