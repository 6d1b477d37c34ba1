"""Word shapes: a class token for each unknown word, from its spelling.

A single `<unk>` tells a tagger nothing about the 16% of English-EWT test tokens it never saw;
their spelling does: "Fairbanks" (capitalised), "1,250" (digits), "re-elected" (hyphen),
"quickly" (-ly), "painted" (-ed). `word_shape` maps a word to one of a few hundred tokens such as
`<unk:Aa-ly>`, in the manner of the unknown-word signatures of classic taggers and parsers. The
shapes are ordinary vocabulary words: a tagging vocabulary holds the shapes of its rare training
words, rare words are replaced by their shape at random during training so that the shape
embeddings are learned, and at test time an unknown word is encoded as its shape.

    >>> word_shape("Fairbanks"), word_shape("1,250"), word_shape("re-elected"), word_shape("quickly")
    ('<unk:Aa-s>', '<unk:9>', '<unk:a--ed>', '<unk:a-ly>')
"""

from collections.abc import Sequence

from flaxseq.data.vocab import UNK, Vocab

SUFFIXES = (  # longest first, so that "-ness" wins over "-s"
    "ness", "ment", "able", "ible", "less", "ship", "tion", "sion", "ing", "ous", "ful", "ive", "ize", "ise",
    "ist", "ism", "ity", "est", "ed", "ly", "er", "al", "ic", "en", "es", "s", "y",
)


def word_shape(word: str) -> str:
    """The class token of an unknown word: case, digits, hyphen, punctuation and suffix.

    Case: `A` (all capitals), `Aa` (capitalised), `a` (lower or uncased); a word with a digit is
    `9`, one without letters or digits `.`; then `-` if it holds a hyphen, then the first of
    `SUFFIXES` that ends it (for lowercase words of four letters or more).
    """
    if not isinstance(word, str) or not word:
        raise ValueError(f"word must be a non-empty str, got {word!r}")
    if any(c.isdigit() for c in word):
        return "<unk:9>"
    if not any(c.isalpha() for c in word):
        return "<unk:.>"
    if word.isupper():
        case = "A"
    elif word[0].isupper():
        case = "Aa"
    else:
        case = "a"
    hyphen = "-" if "-" in word else ""
    lower = word.lower()
    suffix = next((s for s in SUFFIXES if len(lower) >= 4 and lower.endswith(s) and len(lower) > len(s) + 1), "")
    return f"<unk:{case}{hyphen}{'-' + suffix if suffix else ''}>"


def known_or_shape(
    sentences: Sequence[Sequence[str]], vocab: Vocab, lowercase: bool = False, shapes: bool = True
) -> list[list[str]]:
    """The vocabulary's token for each word (lowercased first if `lowercase`), or, for a word
    `vocab` lacks, the shape of its original spelling if `shapes` (which encodes as `<unk>` if
    `vocab` lacks that too), else `<unk>`.

        >>> vocab = Vocab(["the", "<unk:Aa>"])
        >>> known_or_shape([["The", "Fox", "jumped"]], vocab, lowercase=True)
        [['the', '<unk:Aa>', '<unk:a-ed>']]
    """
    def token(word):
        key = word.lower() if lowercase else word
        if key in vocab:
            return key
        return word_shape(word) if shapes else UNK

    return [[token(word) for word in sentence] for sentence in sentences]
