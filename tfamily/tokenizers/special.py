"""Special tokens, declared once, as data.

Two tables live here and nowhere else:

* ``SPECIAL_TOKENS`` - the role -> token string map our own trained tokenizers use by
  default. Ids are given in this order, so ``<pad>`` is 0 (a zero-filled batch is
  all padding), then ``<unk>`` 1, ``<s>`` 2, ``<|endoftext|>`` 3.
* ``KNOWN_SPECIAL_TOKENS`` - for each role, the token strings other conventions use,
  most preferred first. A tokenizer.json carries no notion of "roles", only token
  strings, so when one is loaded (ours or, say, GPT-2's) the roles are inferred by
  looking these names up. That is also why a trained tokenizer may only use special
  strings listed here: anything else could not be recognised again after a save/load.

Later families add their roles ([CLS], [SEP], [MASK], T5 sentinels, GLM blanks) by
extending these tables, not by scattering string literals through the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# role -> token string for tokenizers we train. Order matters: it fixes the ids.
SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<pad>",
    "unk": "<unk>",
    "bos": "<s>",
    "eos": "<|endoftext|>",
}

# role -> token string for our BERT-style (wordpiece) tokenizers: BERT's own names, in
# the order that makes [PAD] id 0 (its vocab.txt has [UNK] 100, [CLS] 101, ... after 99
# unused slots; ours need no gaps).
WORDPIECE_SPECIAL_TOKENS: dict[str, str] = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}

# role -> known token strings, most preferred first. A name may serve several roles:
# GPT-2 has a single special, "<|endoftext|>", used as bos, eos and unk alike, so it is
# listed (last) under each of them. ChatML's "<|im_start|>" / "<|im_end|>" come after the
# document-level names: in SmolLM2 they open and close a chat turn, while "<|endoftext|>"
# ends a document, so a tokenizer holding both keeps "<|endoftext|>" as bos / eos (the chat
# template, not the eos role, says where a turn ends).
KNOWN_SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>", "<|endoftext|>"),
    "bos": ("<s>", "<|startoftext|>", "<|begin_of_text|>", "<bos>", "[BOS]", "<|endoftext|>", "<|im_start|>"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[EOS]", "<|im_end|>"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
    # GLM (Du et al. 2022): [S] starts each blank's span in Part B, [E] ends it, and [gMASK]
    # is the one long blank at the end of a text that plain generation fills. GLM's own
    # vocabularies spell them <|startofpiece|> / <|endofpiece|>.
    "span_start": ("[S]", "<|startofpiece|>", "[sop]"),
    "span_end": ("[E]", "<|endofpiece|>", "[eop]"),
    "gmask": ("[gMASK]",),
}

# role -> token string for tokenizers trained for GLM: ours, plus the three blank roles.
GLM_SPECIAL_TOKENS: dict[str, str] = {
    **SPECIAL_TOKENS,
    "mask": "[MASK]",
    "span_start": "[S]",
    "span_end": "[E]",
    "gmask": "[gMASK]",
}

ROLES: tuple[str, ...] = tuple(KNOWN_SPECIAL_TOKENS)


def infer_roles(
    vocab: Iterable[str], declared_unk: str | None = None
) -> dict[str, str]:
    """Return role -> token string for every role whose known name is in ``vocab``.

    ``declared_unk`` is the unk token the model itself names (WordLevel, BPE and
    WordPiece models store one); it wins over the name table because the model really
    emits it for unknown input.
    """
    present = set(vocab)
    roles: dict[str, str] = {}
    for role, names in KNOWN_SPECIAL_TOKENS.items():
        if role == "unk" and declared_unk is not None and declared_unk in present:
            roles[role] = declared_unk
            continue
        for name in names:
            if name in present:
                roles[role] = name
                break
    return roles


def check_special_tokens(special_tokens: Mapping[str, str]) -> dict[str, str]:
    """Validate a role -> token map for training and return it as a plain dict.

    Each token must be a non-empty string and must be the name that ``infer_roles``
    would pick for its role given these tokens, otherwise the role would silently be
    lost (or change) after save/load.
    """
    tokens = dict(special_tokens)
    for role, token in tokens.items():
        if role not in KNOWN_SPECIAL_TOKENS:
            raise ValueError(
                f"special_tokens: unknown role {role!r}; known roles: {', '.join(ROLES)}"
            )
        if not isinstance(token, str) or not token:
            raise ValueError(f"special_tokens[{role!r}] must be a non-empty string, got {token!r}")
    inferred = infer_roles(tokens.values())
    for role, token in tokens.items():
        if inferred.get(role) != token:
            raise ValueError(
                f"special_tokens[{role!r}] = {token!r} would not be recognised as {role!r} "
                f"when the tokenizer is loaded again (found {inferred.get(role)!r}); "
                f"use one of {KNOWN_SPECIAL_TOKENS[role]} or add it to "
                "KNOWN_SPECIAL_TOKENS in tfamily/tokenizers/special.py"
            )
    return tokens
