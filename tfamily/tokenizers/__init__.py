"""Tokenizers: char, word, byte-level BPE and WordPiece trained with the `tokenizers` library.

    tok = Tokenizer.train("bpe", [Path("corpus.txt")], vocab_size=8192)
    ids = tok.encode("To be, or not to be")      # no BOS/EOS added
    tok.decode(ids)                              # the exact text back
    tok.save("tok/tokenizer.json"); Tokenizer.load("tok/tokenizer.json")
"""

from .special import KNOWN_SPECIAL_TOKENS, SPECIAL_TOKENS, WORDPIECE_SPECIAL_TOKENS
from .tokenizer import KINDS, Tokenizer, train_tokenizer

__all__ = ["Tokenizer", "train_tokenizer", "SPECIAL_TOKENS", "KNOWN_SPECIAL_TOKENS", "KINDS", "WORDPIECE_SPECIAL_TOKENS"]
