"""Semantic errors made from clean values, for choosing thresholds and measuring the model-based methods.

The rule methods already catch typos, case, whitespace, bad formats and unknown words. What they cannot see are
values that are well-formed but mean the wrong thing; these kinds imitate them:

* ``other_field``: a value of another field type (a colour in the category column);
* ``foreign_word``: one word replaced by a word taken from another field type's values ("100% Organic Navy");
* ``shuffle``: the words of a value in another order ("Bleach not do, Dry tumble low").

Values equal to a clean value of the field are never produced. Deterministic for a seed.
"""
from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

KINDS = ("other_field", "foreign_word", "shuffle")
_WORD = re.compile(r"[^\W\d_]{3,}")
# out-of-domain words when the training data has a single field type
FALLBACK_WORDS = ("Lettuce", "Tuesday", "Invoice", "Banana", "Keyboard", "Amsterdam", "Volcano", "Pension",
                  "Thermostat", "Giraffe", "Mortgage", "Spinach", "Carburettor", "Election", "Dolphin", "Granite")


def words_of(values: Sequence[str]) -> list[str]:
    return sorted({m.group() for v in values for m in _WORD.finditer(v)})


def semantic_errors(values_by_field: Mapping[str, Sequence[str]], per_field: int, seed: int = 0
                    ) -> dict[str, list[tuple[str, str]]]:
    """Up to ``per_field`` (kind, wrong value) pairs per field type, spread over the kinds that apply."""
    rng = random.Random(seed)
    fields = sorted(values_by_field)
    vocab = {f: words_of(values_by_field[f]) for f in fields}
    out: dict[str, list[tuple[str, str]]] = {}
    for f in fields:
        own = set(values_by_field[f])
        own_words = set(vocab[f])
        others = [v for g in fields if g != f for v in values_by_field[g] if v not in own]
        foreign = [w for g in fields if g != f for w in vocab[g] if w not in own_words]
        foreign = foreign or [w for w in FALLBACK_WORDS if w not in own_words]
        sources = [v for v in values_by_field[f] if v]
        made: dict[str, str] = {}
        attempts = 0
        while len(made) < per_field and attempts < per_field * 20 and sources:
            attempts += 1
            kind = KINDS[attempts % len(KINDS)]
            if kind == "other_field":
                wrong = rng.choice(others) if others else rng.choice(foreign)
            elif kind == "foreign_word":
                wrong = _replace_word(rng.choice(sources), rng.choice(foreign), rng)
            else:
                wrong = _shuffle(rng.choice(sources), rng)
            if wrong and wrong not in own and wrong not in made:
                made[wrong] = kind
        out[f] = [(kind, value) for value, kind in made.items()]
    return out


def _replace_word(value: str, word: str, rng: random.Random) -> str | None:
    words = list(_WORD.finditer(value))
    if not words:
        return None
    w = rng.choice(words)
    return value[: w.start()] + word + value[w.end():]


def _shuffle(value: str, rng: random.Random) -> str | None:
    """Permute the words (tokens between spaces) of each comma/semicolon-separated part, keep punctuation."""
    tokens = value.split(" ")
    if len(tokens) < 2:
        return None
    for _ in range(5):
        perm = tokens[:]
        rng.shuffle(perm)
        if perm != tokens:
            text = " ".join(perm)
            # keep a trailing full stop at the end, as real texts have it
            return text if not value.endswith(".") else text.replace(".", "") + "."
    return None
