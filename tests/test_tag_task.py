"""The tagging task's vocabulary: shapes of rare words, and their random replacement in training."""

import jax
import numpy as np

from flaxseq import data
from flaxseq.tagger import GRUTagger
from flaxseq.tasks.tag import TagConfig, build_vocab, make_loss

TRAIN = [["The", "dog", "barked"], ["The", "dog", "Walked"], ["A", "cat", "sat"]]


def test_rare_words_are_replaced_by_the_shape_of_their_spelling():
    vocab, replacement = build_vocab(TRAIN, TagConfig(lowercase=True, unk_max_count=1))
    rare = {"barked": "<unk:a-ed>", "walked": "<unk:Aa-ed>", "a": "<unk:A>", "cat": "<unk:a>", "sat": "<unk:a>"}
    for word in vocab.tokens[len(vocab.specials):]:
        expected = rare.get(word, word)
        assert vocab.id_to_token(int(replacement[vocab.token_to_id(word)])) == expected, word
    assert set(rare.values()) <= set(vocab.tokens)


def test_without_shapes_rare_words_are_replaced_by_unk():
    vocab, replacement = build_vocab(TRAIN, TagConfig(lowercase=True, unk_max_count=1, unk_shapes=False))
    assert not any(token.startswith("<unk:") for token in vocab.tokens)
    replaced = {vocab.tokens[i] for i in range(len(vocab)) if replacement[i] != i}
    assert replaced == {"barked", "walked", "a", "cat", "sat"}
    assert set(replacement[replacement != np.arange(len(vocab))].tolist()) == {data.UNK_ID}


def test_the_loss_replaces_rare_words_at_random_in_training_only():
    vocab, replacement = build_vocab(TRAIN, TagConfig(lowercase=True, unk_max_count=1))
    model = GRUTagger(len(vocab), 4, 3, 1, 2)
    ids = np.array([vocab.encode(["the", "dog", "barked"])], np.int32)
    batch = {"ids": ids, "lengths": np.array([3], np.int32), "tags": np.zeros((1, 3), np.int32),
             "weight": np.ones(1, np.float32)}
    params = model.init(jax.random.key(0), ids)["params"]
    replaced = dict(batch, ids=replacement[ids])  # "barked" -> "<unk:a-ed>"
    assert replaced["ids"][0, 2] != ids[0, 2]

    def loss(probability, b, key):
        return float(make_loss(model, replacement, probability)(params, b, key)[0])

    key = jax.random.key(1)
    assert loss(1.0, batch, key) == loss(0.0, replaced, key)   # every rare word replaced
    assert loss(0.0, batch, key) != loss(1.0, batch, key)
    assert loss(1.0, batch, None) == loss(0.0, batch, None)    # evaluation never replaces
