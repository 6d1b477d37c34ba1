"""Vocabulary: a fixed map between tokens and integer ids.

Ids `0` and `1` are always `<pad>` and `<unk>`; extra special tokens (`<sos>`, `<eos>` for
sequence-to-sequence targets) follow, then the words, most frequent first. Words of equal
frequency are ordered alphabetically (by code point), so the ids do not depend on the order of
the corpus.

    >>> vocab = Vocab.build([["the", "cat"], ["the", "dog"]], min_freq=1)
    >>> vocab.tokens
    ('<pad>', '<unk>', 'the', 'cat', 'dog')
    >>> vocab.encode(["the", "bird"])
    [2, 1]
    >>> Vocab.from_dict(vocab.to_dict()) == vocab        # vocab.save(path), Vocab.load(path): as JSON
    True

Targets get their own vocabulary, e.g. `Vocab.build(phonemes, specials=(SOS, EOS))` gives
`<sos>` = 2 and `<eos>` = 3. `replace_rare` hides some rare training words behind `<unk>` so
that the `<unk>` embedding is trained before it meets unknown words at test time.
"""

import collections
import json
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from flaxseq.checks import check_int

PAD = "<pad>"
UNK = "<unk>"
SOS = "<sos>"
EOS = "<eos>"
PAD_ID = 0
UNK_ID = 1


class Vocab:
    """Tokens in id order: `(<pad>, <unk>, *specials, *words)`.

    Args:
        words: the ordinary tokens, in id order (no duplicates, no special token).
        specials: extra special tokens placed after `<pad>` and `<unk>`, e.g. `(SOS, EOS)`.
    """

    def __init__(self, words: Sequence[str] = (), specials: Sequence[str] = ()):
        specials = (PAD, UNK, *_check_tokens("specials", specials))
        words = _check_tokens("words", words)
        self.specials: tuple[str, ...] = specials
        self.tokens: tuple[str, ...] = specials + words
        self._ids = {}
        for i, token in enumerate(self.tokens):
            if token in self._ids:
                raise ValueError(f"tokens must be unique, got {token!r} at ids {self._ids[token]} and {i}")
            self._ids[token] = i

    @classmethod
    def build(
        cls,
        sequences: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (),
    ) -> "Vocab":
        """The words of `sequences` seen at least `min_freq` times, most frequent first.

        Ties are broken alphabetically. Occurrences of special tokens are not counted as words.

        Args:
            sequences: token sequences, e.g. `[tokenize(text) for text in texts]`.
            min_freq: words seen fewer times are left out (they will encode as `<unk>`).
            max_size: at most this many tokens in all, specials included; None for no limit.
            specials: extra special tokens after `<pad>` and `<unk>`.
        """
        check_int("min_freq", min_freq, 1)
        if max_size is not None:
            check_int("max_size", max_size, 2 + len(specials))
        counts = count_tokens(sequences)
        reserved = {PAD, UNK, *specials}
        ranked = sorted((token for token in counts if token not in reserved), key=lambda t: (-counts[t], t))
        words = [token for token in ranked if counts[token] >= min_freq]
        if max_size is not None:
            words = words[: max_size - 2 - len(specials)]
        return cls(words, specials)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and (self.specials, self.tokens) == (other.specials, other.tokens)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, specials={self.specials})"

    def token_to_id(self, token: str) -> int:
        """The id of `token`; `UNK_ID` if it is not in the vocabulary."""
        return self._ids.get(token, UNK_ID)

    def id_to_token(self, id: int) -> str:
        """The token of `id`, which must be in `[0, len(self))`."""
        if isinstance(id, bool) or not isinstance(id, numbers.Integral):
            raise TypeError(f"id must be an int, got {type(id).__name__}")
        if not 0 <= id < len(self.tokens):
            raise ValueError(f"id must be in [0, {len(self.tokens)}), got {id}")
        return self.tokens[id]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of `tokens`, with `UNK_ID` for tokens outside the vocabulary."""
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of tokens, got a str (tokenize it first)")
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int], skip_specials: bool = False) -> list[str]:
        """Tokens of `ids` (a list or a 1-d array); with `skip_specials`, special tokens are left out."""
        tokens = [self.id_to_token(i) for i in ids]
        if skip_specials:
            tokens = [token for token in tokens if token not in self.specials]
        return tokens

    def to_dict(self) -> dict:
        """A JSON-serialisable dict: `{"specials": [...], "words": [...]}` (specials include pad and unk)."""
        return {"specials": list(self.specials), "words": list(self.tokens[len(self.specials) :])}

    @classmethod
    def from_dict(cls, data, source: str = "vocabulary") -> "Vocab":
        """The inverse of `to_dict`; `source` names the origin of `data` in error messages."""
        if not isinstance(data, dict) or set(data) != {"specials", "words"}:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{source}: expected an object with keys ['specials', 'words'], got {got}")
        specials = data["specials"]
        if not isinstance(specials, list) or specials[:2] != [PAD, UNK]:
            raise ValueError(f"{source}: 'specials' must be a list starting with {PAD!r}, {UNK!r}, got {specials!r}")
        try:
            return cls(data["words"], specials[2:])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None

    def save(self, path) -> None:
        """Write the vocabulary to `path` as JSON (UTF-8)."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, ensure_ascii=False, indent=0)
            file.write("\n")

    @classmethod
    def load(cls, path) -> "Vocab":
        """Read a vocabulary written by `save`; a malformed file raises ValueError naming it."""
        with open(path, encoding="utf-8") as file:
            try:
                data = json.load(file)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path}: not valid UTF-8 JSON: {error}") from None
        return cls.from_dict(data, source=str(path))


def count_tokens(sequences: Iterable[Sequence[str]]) -> collections.Counter:
    """How often each token occurs in `sequences` (a list of token lists)."""
    counts = collections.Counter()
    for i, sequence in enumerate(sequences):
        if isinstance(sequence, str):
            raise TypeError(f"sequences[{i}] must be a sequence of tokens, got a str (tokenize it first)")
        counts.update(sequence)
    return counts


def replace_rare(
    sequences: Sequence[Sequence[str]],
    max_count: int = 1,
    probability: float = 0.5,
    seed: int | np.random.Generator = 0,
) -> list[list[str]]:
    """Replace occurrences of rare words by `<unk>` at random, to train the `<unk>` embedding.

    Each occurrence of a word seen at most `max_count` times in `sequences` becomes `<unk>` with
    probability `probability`, independently. The result depends only on the inputs and `seed`;
    pass a new seed (or a shared `np.random.Generator`) each epoch for fresh replacements.

        >>> replace_rare([["a", "b", "b"]], max_count=1, probability=1.0)
        [['<unk>', 'b', 'b']]
    """
    check_int("max_count", max_count, 1)
    if isinstance(probability, bool) or not isinstance(probability, numbers.Real) or not 0 <= probability <= 1:
        raise ValueError(f"probability must be a number in [0, 1], got {probability!r}")
    rng = _as_generator(seed)
    counts = count_tokens(sequences)
    replaced = []
    for sequence in sequences:
        draws = rng.random(len(sequence))
        replaced.append([
            UNK if counts[token] <= max_count and draw < probability else token
            for token, draw in zip(sequence, draws, strict=True)
        ])
    return replaced


def _check_tokens(name: str, tokens) -> tuple[str, ...]:
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of str, got a str: {tokens!r}")
    tokens = tuple(tokens)
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(token).__name__}: {token!r}")
    return tokens


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """`seed` itself if it is a numpy Generator, else a new Generator seeded with the int `seed`."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")
    check_int("seed", seed, 0)
    return np.random.default_rng(int(seed))
