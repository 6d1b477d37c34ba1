"""Word shapes: the class token of an unknown word, and the encoding that falls back to it."""

import pytest

from flaxseq.data import UNK, Vocab, known_or_shape, word_shape


@pytest.mark.parametrize("word, shape", [
    ("dog", "<unk:a>"),             # too short for a suffix
    ("quickly", "<unk:a-ly>"),
    ("kindness", "<unk:a-ness>"),   # the longest suffix wins over "-s"
    ("Fairbanks", "<unk:Aa-s>"),
    ("NASA", "<unk:A>"),
    ("re-elected", "<unk:a--ed>"),
    ("Jean-Luc", "<unk:Aa->"),
    ("1,250", "<unk:9>"),
    ("3rd", "<unk:9>"),
    ("...", "<unk:.>"),
    ("bed", "<unk:a>"),             # "-ed" needs a stem of two letters or more
    ("sing", "<unk:a>"),
    ("singing", "<unk:a-ing>"),
])
def test_word_shape(word, shape):
    assert word_shape(word) == shape


@pytest.mark.parametrize("word", ["", None, 3])
def test_word_shape_rejects_what_is_not_a_word(word):
    with pytest.raises(ValueError, match=f"word must be a non-empty str, got {word!r}"):
        word_shape(word)


def test_known_or_shape_keeps_known_words_and_falls_back_to_shape_then_unk():
    vocab = Vocab(["the", "dog", "<unk:Aa>"])
    sentences = [["The", "Dog", "Rex", "barked"]]
    assert known_or_shape(sentences, vocab, lowercase=True) == [["the", "dog", "<unk:Aa>", "<unk:a-ed>"]]
    # without lowercasing "The" and "Dog" are unknown; "<unk:a-ed>" is not in the vocabulary, so it encodes as <unk>
    assert known_or_shape(sentences, vocab) == [["<unk:Aa>", "<unk:Aa>", "<unk:Aa>", "<unk:a-ed>"]]
    assert vocab.encode(known_or_shape(sentences, vocab)[0])[-1] == vocab.token_to_id(UNK)
    assert known_or_shape(sentences, vocab, lowercase=True, shapes=False) == [["the", "dog", UNK, UNK]]
