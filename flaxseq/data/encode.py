"""Text to padded id arrays: tokenisation, truncation, padding and true lengths.

The default tokeniser is the PyTorch tutorial's: lowercase, then split on whitespace. Any
callable from a string to a list of tokens can replace it (`list` gives characters).

    >>> vocab = Vocab.build([tokenize("The cat sat on the mat")])
    >>> vocab.tokens
    ('<pad>', '<unk>', 'the', 'cat', 'mat', 'on', 'sat')
    >>> ids, lengths = encode_texts(["The cat", "a dog sat on the mat"], vocab, max_length=4)
    >>> ids                                  # [n, max_length] int32, padded with PAD_ID = 0
    array([[2, 3, 0, 0],
           [1, 1, 6, 5]], dtype=int32)
    >>> lengths                              # [n] int32, in [1, max_length]
    array([2, 4], dtype=int32)

An empty sequence (a blank text) encodes as a single `<unk>` with length 1: the models need
`lengths >= 1`, and dropping it would misalign the labels. Tag sequences have no such fallback:
`encode_tagged` rejects an empty sentence.

For sequence-to-sequence targets, `encode_sequences(..., sos=True, eos=True)` adds `<sos>` and
`<eos>` (which the vocabulary must hold as specials) and truncates the tokens, never `<eos>`.
"""

from collections.abc import Callable, Sequence

import numpy as np

from flaxseq.checks import check_int
from flaxseq.data.vocab import EOS, PAD_ID, SOS, UNK_ID, Vocab


def tokenize(text: str) -> list[str]:
    """The tutorial's tokeniser: `text.lower().split()`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text.lower().split()


def encode_texts(
    texts: Sequence[str],
    vocab: Vocab,
    max_length: int,
    tokenizer: Callable[[str], list[str]] = tokenize,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise, encode, truncate and pad `texts`.

    Returns:
        ids: `[n, max_length]` int32, padded with `PAD_ID`.
        lengths: `[n]` int32, the number of tokens kept (1 for an empty text, encoded as `<unk>`).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, got a single str")
    return encode_sequences([tokenizer(text) for text in texts], vocab, max_length)


def encode_sequences(
    sequences: Sequence[Sequence[str]],
    vocab: Vocab,
    max_length: int,
    *,
    sos: bool = False,
    eos: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode, truncate and pad token sequences; optionally add `<sos>` first and `<eos>` last.

    The tokens are truncated to leave room for `<sos>` and `<eos>`, which are always kept.

    Returns:
        ids: `[n, max_length]` int32, padded with `PAD_ID`.
        lengths: `[n]` int32, the number of ids before the padding (at least 1).
    """
    _check_vocab("vocab", vocab)
    check_int("max_length", max_length, 1 + sos + eos)
    prefix = [_special_id(vocab, SOS)] if sos else []
    suffix = [_special_id(vocab, EOS)] if eos else []
    room = max_length - len(prefix) - len(suffix)
    ids = np.full((len(sequences), max_length), PAD_ID, np.int32)
    lengths = np.zeros(len(sequences), np.int32)
    for i, tokens in enumerate(sequences):
        if isinstance(tokens, str):
            raise TypeError(f"sequences[{i}] must be a sequence of tokens, got a str (tokenize it first)")
        body = vocab.encode(tokens[:room])
        if not body and not (sos or eos):
            body = [UNK_ID]  # an empty sequence: one <unk>, length 1
        row = prefix + body + suffix
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return ids, lengths


def encode_tagged(
    words: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    word_vocab: Vocab,
    tag_vocab: Vocab,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode parallel word and tag sequences (one tag per word), truncated and padded alike.

    Returns:
        word_ids: `[n, max_length]` int32, padded with `PAD_ID`.
        tag_ids: `[n, max_length]` int32, padded with `PAD_ID`; mask the loss with `lengths`.
        lengths: `[n]` int32, in `[1, max_length]`.
    """
    _check_vocab("tag_vocab", tag_vocab)
    if len(words) != len(tags):
        raise ValueError(f"words and tags must have the same number of sentences, got {len(words)} and {len(tags)}")
    for i, (sentence, sentence_tags) in enumerate(zip(words, tags, strict=True)):
        if isinstance(sentence, str) or isinstance(sentence_tags, str):
            raise TypeError(f"words[{i}] and tags[{i}] must be sequences of tokens, got a str")
        if len(sentence) != len(sentence_tags):
            raise ValueError(
                f"words[{i}] and tags[{i}] must have the same length, got {len(sentence)} and {len(sentence_tags)}"
            )
        if not sentence:
            raise ValueError(f"words[{i}] is empty; a tagged sentence needs at least one word")
    word_ids, lengths = encode_sequences(words, word_vocab, max_length)
    tag_ids, _ = encode_sequences(tags, tag_vocab, max_length)
    return word_ids, tag_ids, lengths


def encode_labels(labels: Sequence[str], classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class names to ids: `labels[i] == classes[ids[i]]`.

    Args:
        labels: one class name per example.
        classes: the class names in id order; by default the sorted distinct labels.

    Returns:
        ids: `[n]` int32.
        classes: the class names in id order.
    """
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of class names, got a single str")
    classes = sorted(set(labels)) if classes is None else list(classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {classes}")
    index = {name: i for i, name in enumerate(classes)}
    ids = np.zeros(len(labels), np.int32)
    for i, label in enumerate(labels):
        if label not in index:
            raise ValueError(f"labels[{i}] = {label!r} is not one of the classes {classes}")
        ids[i] = index[label]
    return ids, classes


def _check_vocab(name: str, vocab) -> None:
    if not isinstance(vocab, Vocab):
        raise TypeError(f"{name} must be a Vocab, got {type(vocab).__name__}")


def _special_id(vocab: Vocab, token: str) -> int:
    if token not in vocab.specials:
        raise ValueError(
            f"vocab has no special token {token!r}; build it with specials=(SOS, EOS), got specials {vocab.specials}"
        )
    return vocab.token_to_id(token)
