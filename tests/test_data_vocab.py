"""Vocabulary, tokenisation and encoding: flaxseq.data.vocab and flaxseq.data.encode."""

import collections
import json
import re

import numpy as np
import pytest

from flaxseq.data import (
    EOS,
    PAD,
    PAD_ID,
    SOS,
    UNK,
    UNK_ID,
    Vocab,
    encode_labels,
    encode_sequences,
    encode_tagged,
    encode_texts,
    replace_rare,
    tokenize,
)

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "é", "Big"]


def random_texts(rng, count, max_words=12):
    """Texts of random words, with mixed case and irregular whitespace."""
    texts = []
    for _ in range(count):
        words = rng.choice(WORDS, size=rng.integers(0, max_words))
        words = [w.upper() if rng.random() < 0.2 else w for w in words]
        texts.append(rng.choice([" ", "  ", "\t", "\n"]).join(words))
    return texts


# Vocabulary building


def test_build_orders_by_frequency_then_alphabetically():
    vocab = Vocab.build([["d", "c", "b", "b"], ["c", "a", "e", "e", "e"]])  # first appearance would give c, b, d, a
    assert vocab.tokens == (PAD, UNK, "e", "b", "c", "a", "d")
    assert vocab.specials == (PAD, UNK)
    assert (vocab.token_to_id(PAD), vocab.token_to_id(UNK)) == (PAD_ID, UNK_ID) == (0, 1)


def test_build_matches_an_independent_count():
    rng = np.random.default_rng(0)
    sequences = [tokenize(text) for text in random_texts(rng, 200)]
    counts = collections.Counter(token for sequence in sequences for token in sequence)
    for min_freq in (1, 3, 50):
        for max_size in (None, 5, 8):
            vocab = Vocab.build(sequences, min_freq=min_freq, max_size=max_size)
            expected = [t for t, c in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if c >= min_freq]
            if max_size is not None:
                expected = expected[: max_size - 2]
            assert list(vocab.tokens[2:]) == expected
            assert len(vocab) == len(expected) + 2
            assert all(counts[t] >= min_freq for t in vocab.tokens[2:])


def test_build_with_extra_specials_and_max_size_counting_them():
    vocab = Vocab.build([["x", "y", "y", "z", "z", "z"]], max_size=5, specials=(SOS, EOS))
    assert vocab.tokens == (PAD, UNK, SOS, EOS, "z")
    assert (vocab.token_to_id(SOS), vocab.token_to_id(EOS)) == (2, 3)
    assert vocab.specials == (PAD, UNK, SOS, EOS)


def test_build_does_not_count_special_tokens_as_words():
    vocab = Vocab.build([["<unk>", "<unk>", "a", "<eos>"]], specials=(EOS,))
    assert vocab.tokens == (PAD, UNK, EOS, "a")


def test_len_contains_and_lookups():
    vocab = Vocab(["hello", "world"])
    assert len(vocab) == 4
    assert "hello" in vocab and PAD in vocab and "bye" not in vocab
    assert [vocab.token_to_id(t) for t in ("hello", "world", "bye")] == [2, 3, UNK_ID]
    assert [vocab.id_to_token(i) for i in range(4)] == [PAD, UNK, "hello", "world"]
    assert vocab.id_to_token(np.int32(3)) == "world"


def test_encode_decode_round_trip():
    vocab = Vocab(["hello", "world"], specials=(EOS,))
    assert vocab.encode(["world", "hello", "bye", EOS]) == [4, 3, UNK_ID, 2]
    assert vocab.decode([4, 3, 1, 2, 0, 0]) == ["world", "hello", UNK, EOS, PAD, PAD]
    assert vocab.decode(np.array([4, 3, 1, 2, 0], np.int32), skip_specials=True) == ["world", "hello"]
    tokens = ["hello", "world", "world"]
    assert vocab.decode(vocab.encode(tokens)) == tokens


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda v: v.id_to_token(4), ValueError, "id must be in [0, 4), got 4"),
        (lambda v: v.id_to_token(-1), ValueError, "id must be in [0, 4), got -1"),
        (lambda v: v.id_to_token("a"), TypeError, "id must be an int, got str"),
        (lambda v: v.decode([0, 9]), ValueError, "id must be in [0, 4), got 9"),
        (lambda v: v.encode("hello"), TypeError, "tokens must be a sequence of tokens, got a str"),
    ],
)
def test_lookup_errors(call, error, message):
    with pytest.raises(error) as info:
        call(Vocab(["hello", "world"]))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: Vocab(["a", "b", "a"]), ValueError, "tokens must be unique, got 'a' at ids 2 and 4"),
        (lambda: Vocab(["a", UNK]), ValueError, "tokens must be unique, got '<unk>' at ids 1 and 3"),
        (lambda: Vocab(["a", 3]), TypeError, "words[1] must be a str, got int: 3"),
        (lambda: Vocab("abc"), TypeError, "words must be a sequence of str, got a str: 'abc'"),
        (lambda: Vocab([], specials=(SOS, SOS)), ValueError, "tokens must be unique, got '<sos>' at ids 2 and 3"),
        (lambda: Vocab.build([["a"]], min_freq=0), ValueError, "min_freq must be greater than zero, got 0"),
        (lambda: Vocab.build([["a"]], min_freq=1.5), TypeError, "min_freq should be of type int, got: float"),
        (lambda: Vocab.build([["a"]], max_size=1), ValueError, "max_size must be at least 2, got 1"),
        (lambda: Vocab.build([["a"]], max_size=3, specials=(SOS, EOS)), ValueError, "max_size must be at least 4"),
        (lambda: Vocab.build([["a"], "b c"]), TypeError, "sequences[1] must be a sequence of tokens, got a str"),
    ],
)
def test_construction_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


# Saving and loading


def test_save_load_round_trip_is_exact(tmp_path):
    vocab = Vocab(["zebra", "é", 'quo"te', "back\\slash", "tab\tbed", "a"], specials=(SOS, EOS))
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab
    assert loaded.tokens == vocab.tokens and loaded.specials == vocab.specials
    assert json.loads(path.read_text(encoding="utf-8")) == vocab.to_dict()
    assert Vocab(["a"]) != Vocab(["a"], specials=(SOS,))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid UTF-8 JSON"),
        ('["<pad>", "<unk>"]', "expected an object with keys ['specials', 'words'], got list"),
        ('{"specials": ["<pad>", "<unk>"]}', "expected an object with keys ['specials', 'words'], got ['specials']"),
        ('{"specials": ["<unk>", "<pad>"], "words": []}', "'specials' must be a list starting with '<pad>', '<unk>'"),
        ('{"specials": "<pad>", "words": []}', "'specials' must be a list starting with '<pad>', '<unk>'"),
        ('{"specials": ["<pad>", "<unk>"], "words": ["a", "a"]}', "tokens must be unique, got 'a' at ids 2 and 3"),
        ('{"specials": ["<pad>", "<unk>"], "words": ["a", null]}', "words[1] must be a str, got NoneType"),
    ],
)
def test_load_malformed_file_fails_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        Vocab.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_load_non_utf8_file_fails_naming_it(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"specials": ["\xff"]}')
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: not valid UTF-8 JSON"):
        Vocab.load(path)


# Replacing rare words


def test_replace_rare_replaces_only_rare_words_at_the_given_rate():
    rng = np.random.default_rng(1)
    sequences = [list(rng.choice(["common", "often"], size=20)) + [f"rare{i}"] for i in range(2000)]
    replaced = replace_rare(sequences, max_count=1, probability=0.3, seed=7)
    assert len(replaced) == len(sequences)
    unk_count = 0
    for before, after in zip(sequences, replaced, strict=True):
        assert after[:-1] == before[:-1]  # frequent words never change
        assert after[-1] in (before[-1], UNK)
        unk_count += after[-1] == UNK
    assert abs(unk_count / 2000 - 0.3) < 0.04
    assert sequences[0][-1] == "rare0"  # the input is not modified


def test_replace_rare_threshold_and_extreme_probabilities():
    sequences = [["a", "b", "b", "c", "c", "c"]]
    assert replace_rare(sequences, max_count=2, probability=1.0) == [[UNK, UNK, UNK, "c", "c", "c"]]
    assert replace_rare(sequences, max_count=1, probability=1.0) == [[UNK, "b", "b", "c", "c", "c"]]
    assert replace_rare(sequences, max_count=3, probability=0.0) == sequences


def test_replace_rare_is_determined_by_the_seed():
    sequences = [[f"w{i}", f"w{i + 1}"] for i in range(0, 400, 2)]
    first = replace_rare(sequences, probability=0.5, seed=3)
    assert replace_rare(sequences, probability=0.5, seed=3) == first
    assert replace_rare(sequences, probability=0.5, seed=4) != first
    assert replace_rare(sequences, probability=0.5, seed=np.random.default_rng(3)) == first
    shared = np.random.default_rng(3)
    assert replace_rare(sequences, probability=0.5, seed=shared) == first
    assert replace_rare(sequences, probability=0.5, seed=shared) != first  # the generator moved on


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"probability": 1.5}, ValueError, "probability must be a number in [0, 1], got 1.5"),
        ({"probability": "0.5"}, ValueError, "probability must be a number in [0, 1], got '0.5'"),
        ({"max_count": 0}, ValueError, "max_count must be greater than zero, got 0"),
        ({"seed": -1}, ValueError, "seed must be at least 0, got -1"),
        ({"seed": 1.0}, TypeError, "seed must be an int or a numpy Generator, got float"),
    ],
)
def test_replace_rare_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        replace_rare([["a"]], **kwargs)
    assert message in str(info.value)


# Tokenisation and encoding


def tutorial_encode(text, vocab, max_length):
    """The PyTorch tutorial's `TextDataset.__getitem__`, on a dict vocabulary."""
    tokens = text.lower().split()[:max_length]
    token_ids = [vocab.get(t, vocab["<unk>"]) for t in tokens]
    if len(token_ids) < max_length:
        token_ids += [vocab["<pad>"]] * (max_length - len(token_ids))
    return token_ids


def test_tokenize_is_the_tutorials():
    assert tokenize("Hello  World\tHELLO\n") == ["hello", "world", "hello"]
    assert tokenize("   ") == []
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        tokenize(b"hello")


def test_encode_texts_matches_the_tutorial():
    rng = np.random.default_rng(2)
    texts = [t for t in random_texts(rng, 300) if t.split()]  # the tutorial has no rule for empty texts
    vocab = Vocab.build([tokenize(t) for t in texts[:100]], min_freq=3)
    tutorial_vocab = {token: i for i, token in enumerate(vocab.tokens)}
    for max_length in (1, 5, 12):
        ids, lengths = encode_texts(texts, vocab, max_length)
        assert ids.dtype == np.int32 and lengths.dtype == np.int32
        assert ids.shape == (len(texts), max_length) and lengths.shape == (len(texts),)
        assert ids.tolist() == [tutorial_encode(t, tutorial_vocab, max_length) for t in texts]
        assert lengths.tolist() == [min(len(t.split()), max_length) for t in texts]


def test_encode_texts_tutorial_example():
    vocab = Vocab(["hello", "world"])
    ids, lengths = encode_texts(["hello world", "world hello", "hello hello world", "Hi"], vocab, max_length=4)
    assert ids.tolist() == [[2, 3, 0, 0], [3, 2, 0, 0], [2, 2, 3, 0], [1, 0, 0, 0]]
    assert lengths.tolist() == [2, 2, 3, 1]


def test_empty_text_encodes_as_one_unk_of_length_one():
    vocab = Vocab(["a"])
    ids, lengths = encode_texts(["a a", "", "  \n ", "a"], vocab, max_length=3)
    assert ids.tolist() == [[2, 2, 0], [UNK_ID, 0, 0], [UNK_ID, 0, 0], [2, 0, 0]]
    assert lengths.tolist() == [2, 1, 1, 1]


def test_encode_texts_with_a_character_tokenizer():
    vocab = Vocab(list("abc"))
    ids, lengths = encode_texts(["cab", "abcabc", "xa"], vocab, max_length=4, tokenizer=list)
    assert ids.tolist() == [[4, 2, 3, 0], [2, 3, 4, 2], [1, 2, 0, 0]]
    assert lengths.tolist() == [3, 4, 2]


def test_encode_sequences_with_sos_and_eos_keeps_eos_when_truncating():
    vocab = Vocab(["K", "AE", "T"], specials=(SOS, EOS))
    sos, eos, k, ae, t = (vocab.token_to_id(x) for x in (SOS, EOS, "K", "AE", "T"))
    ids, lengths = encode_sequences([["K", "AE", "T"], ["T"], []], vocab, max_length=4, sos=True, eos=True)
    assert ids.tolist() == [[sos, k, ae, eos], [sos, t, eos, 0], [sos, eos, 0, 0]]
    assert lengths.tolist() == [4, 3, 2]
    ids, lengths = encode_sequences([["K", "AE", "T"], []], vocab, max_length=3, eos=True)
    assert ids.tolist() == [[k, ae, eos], [eos, 0, 0]]
    assert lengths.tolist() == [3, 1]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda v: encode_texts(["a"], v, 0), ValueError, "max_length must be greater than zero, got 0"),
        (lambda v: encode_texts(["a"], v, 2.0), TypeError, "max_length should be of type int, got: float"),
        (lambda v: encode_texts("a b", v, 2), TypeError, "texts must be a sequence of str, got a single str"),
        (lambda v: encode_texts(["a"], {"a": 2}, 2), TypeError, "vocab must be a Vocab, got dict"),
        (lambda v: encode_sequences([["a"], "a"], v, 2), TypeError, "sequences[1] must be a sequence of tokens"),
        (lambda v: encode_sequences([["a"]], v, 2, sos=True), ValueError, "vocab has no special token '<sos>'"),
        (lambda v: encode_sequences([["a"]], v, 2, eos=True, sos=True), ValueError, "max_length must be at least 3"),
    ],
)
def test_encode_errors(call, error, message):
    with pytest.raises(error) as info:
        call(Vocab(["a"]))
    assert message in str(info.value)


def test_encode_tagged_aligns_words_and_tags():
    words = [["The", "cat", "sat"], ["Dogs", "bark", "loudly", "today"]]
    tags = [["DET", "NOUN", "VERB"], ["NOUN", "VERB", "ADV", "NOUN"]]
    word_vocab = Vocab.build(words)
    tag_vocab = Vocab.build(tags)
    word_ids, tag_ids, lengths = encode_tagged(words, tags, word_vocab, tag_vocab, max_length=3)
    assert word_ids.dtype == tag_ids.dtype == lengths.dtype == np.int32
    assert lengths.tolist() == [3, 3]
    for i in range(2):
        assert word_vocab.decode(word_ids[i]) == words[i][:3]
        assert tag_vocab.decode(tag_ids[i]) == tags[i][:3]
    word_ids, tag_ids, lengths = encode_tagged(words, tags, word_vocab, tag_vocab, max_length=5)
    assert lengths.tolist() == [3, 4]
    assert tag_ids[0].tolist()[3:] == [PAD_ID, PAD_ID] and word_ids[0].tolist()[3:] == [PAD_ID, PAD_ID]
    assert tag_vocab.decode(tag_ids[1, :4]) == tags[1]


@pytest.mark.parametrize(
    "words, tags, error, message",
    [
        ([["a"]], [["X"], ["Y"]], ValueError, "words and tags must have the same number of sentences, got 1 and 2"),
        ([["a"], ["a", "b"]], [["X"], ["X"]], ValueError, "words[1] and tags[1] must have the same length, got 2 and"),
        ([["a"], []], [["X"], []], ValueError, "words[1] is empty; a tagged sentence needs at least one word"),
        (["a"], [["X"]], TypeError, "words[0] and tags[0] must be sequences of tokens, got a str"),
    ],
)
def test_encode_tagged_errors(words, tags, error, message):
    with pytest.raises(error) as info:
        encode_tagged(words, tags, Vocab(["a"]), Vocab(["X"]), max_length=2)
    assert message in str(info.value)


def test_encode_labels():
    ids, classes = encode_labels(["tech", "sport", "tech", "business"])
    assert classes == ["business", "sport", "tech"]
    assert ids.dtype == np.int32 and ids.tolist() == [2, 1, 2, 0]
    ids, classes = encode_labels(["b", "a"], classes=["b", "a", "c"])
    assert ids.tolist() == [0, 1] and classes == ["b", "a", "c"]
    with pytest.raises(ValueError, match=r"labels\[1\] = 'd' is not one of the classes \['a', 'b'\]"):
        encode_labels(["a", "d"], classes=["a", "b"])
    with pytest.raises(ValueError, match=r"classes must be distinct, got \['a', 'a'\]"):
        encode_labels(["a"], classes=["a", "a"])
    with pytest.raises(TypeError, match="labels must be a sequence of class names, got a single str"):
        encode_labels("abc")


@pytest.mark.parametrize("module", ["vocab", "encode", "splits", "shapes"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"flaxseq.data.{module}"))
    assert result.attempted > 0 and result.failed == 0
