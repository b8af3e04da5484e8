"""Error kinds: each turns one clean value into a wrong one (or raises ``Skip`` when it cannot).

An injector is ``f(value, rng, ctx) -> str | None`` where ``ctx`` carries the column name, the rule's params
and the column's other values (for swaps). Every injector is deterministic given ``rng``.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Skip(Exception):
    """This kind of error cannot be injected into this value."""


@dataclass
class Context:
    column: str
    params: Mapping[str, Any] = field(default_factory=dict)
    pool: Sequence[str] = ()  # distinct values of the column (for swaps)
    other_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)  # for wrong_domain from_column


Injector = Callable[[str, random.Random, Context], "str | None"]

_WORD = re.compile(r"[^\W\d_]{2,}")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_NUMBER = re.compile(r"^\s*([+-]?)(\d+)(?:\.(\d+))?\s*$")


def typo(v: str, r: random.Random, ctx: Context) -> str:
    """One keyboard-style edit inside a word: insert, delete, swap or substitute a letter."""
    words = list(_WORD.finditer(v))
    if not words:
        raise Skip
    longer = [w for w in words if len(w.group()) >= 4] or words
    w = r.choice(longer)
    s, word = w.start(), w.group()
    for _ in range(8):
        op, i = r.choice(("insert", "delete", "swap", "substitute")), r.randrange(1, len(word))
        letter = r.choice(_LETTERS)
        if word[i - 1].isupper() and word[i].isupper():
            letter = letter.upper()
        new = {"insert": word[:i] + letter + word[i:], "delete": word[:i] + word[i + 1:],
               "swap": word[:i - 1] + word[i] + word[i - 1] + word[i + 1:],
               "substitute": word[:i] + letter + word[i + 1:]}[op]
        if new != word:
            return v[:s] + new + v[w.end():]
    raise Skip


def substitute(v: str, r: random.Random, ctx: Context) -> str:
    """Replace one letter or digit by ``char`` (default a random letter), like OCR/entry noise ``birmingxam``."""
    chars = str(ctx.params.get("chars", _LETTERS))
    spots = [i for i, ch in enumerate(v) if ch.isalnum()]
    if not spots:
        raise Skip
    for _ in range(8):
        i = r.choice(spots)
        ch = r.choice(chars)
        if ch != v[i]:
            return v[:i] + ch + v[i + 1:]
    raise Skip


def case(v: str, r: random.Random, ctx: Context) -> str:
    options = sorted(x for x in {v.lower(), v.upper(), v[:1].swapcase() + v[1:]} if x != v)
    if not options:
        raise Skip
    return r.choice(options)


def whitespace(v: str, r: random.Random, ctx: Context) -> str:
    options = [" " + v, v + " ", "\t" + v] + ([v.replace(" ", "  ", 1)] if " " in v.strip() else [])
    return r.choice(options)


def truncate(v: str, r: random.Random, ctx: Context) -> str:
    lo, hi = ctx.params.get("keep", (0.4, 0.9))
    if len(v) < 3:
        raise Skip
    cut = v[: r.randint(max(1, int(len(v) * lo)), max(1, min(len(v) - 1, int(round(len(v) * hi)))))]
    if not cut.strip() or cut == v:
        raise Skip
    return cut


def missing(v: str, r: random.Random, ctx: Context) -> str | None:
    """An empty cell or one of ``tokens`` (default: empty or ``N/A``); ``null`` in tokens means a null cell."""
    tokens = list(ctx.params.get("tokens", ["", "N/A"]))
    pick = r.choice(tokens)
    return None if pick is None else str(pick)


def swap(v: str, r: random.Random, ctx: Context) -> str:
    """Another value of the same column (a value that belongs to another row)."""
    others = [p for p in ctx.pool if p != v and p]
    if not others:
        raise Skip
    return r.choice(others)


def wrong_domain(v: str, r: random.Random, ctx: Context) -> str:
    """A value of another domain: ``values`` or the values of column ``from_column``."""
    pool: Sequence[str] = ctx.params.get("values") or ()
    if not pool and ctx.params.get("from_column"):
        pool = ctx.other_columns.get(str(ctx.params["from_column"]), ())
    choices = [p for p in pool if p and p != v]
    if not choices:
        raise Skip
    return r.choice(choices)


def digits(v: str, r: random.Random, ctx: Context) -> str:
    """Change one digit (or swap two neighbouring digits)."""
    spots = [i for i, ch in enumerate(v) if ch.isdigit()]
    if not spots:
        raise Skip
    i = r.choice(spots)
    if i + 1 < len(v) and v[i + 1].isdigit() and v[i + 1] != v[i] and r.random() < 0.4:
        return v[:i] + v[i + 1] + v[i] + v[i + 2:]
    d = str((int(v[i]) + r.randint(1, 9)) % 10)
    return v[:i] + d + v[i + 1:]


def number_format(v: str, r: random.Random, ctx: Context) -> str:
    """The same number written differently: ``12`` -> ``12.0``, ``1,200``, ``012``, ``1.2e1``."""
    m = _NUMBER.match(v)
    if not m:
        raise Skip
    sign, whole, frac = m.groups()
    options = []
    if frac is None:
        options += [f"{sign}{whole}.0", f"{sign}{whole}.00"]
    else:
        options += [f"{sign}{whole}.{frac}0", f"{sign}{whole},{frac}"]
    if len(whole) >= 4:
        options.append(f"{sign}{int(whole):,}" + (f".{frac}" if frac else ""))
    try:
        x = float(v)
        if x != 0:
            options.append(f"{x:.3e}")
    except ValueError:
        pass
    options = [o for o in options if o != v]
    if not options:
        raise Skip
    return r.choice(options)


def unit(v: str, r: random.Random, ctx: Context) -> str:
    """The number with a unit or sign attached: ``12`` -> ``12 oz``, ``0.05`` -> ``0.05%``."""
    if not _NUMBER.match(v):
        raise Skip
    units = list(ctx.params.get("units", [" oz", "%", " kg", " units"]))
    return v.strip() + r.choice(units)


def scale(v: str, r: random.Random, ctx: Context) -> str:
    """The number in another unit or magnitude: multiplied by one of ``factors``."""
    m = _NUMBER.match(v)
    if not m:
        raise Skip
    factors = list(ctx.params.get("factors", [100, 0.01, 1000]))
    x = float(v) * float(r.choice(factors))
    decimals = len(m.group(3) or "")
    out = f"{x:.{max(decimals, 0)}f}" if decimals else (str(int(round(x))) if x == int(round(x)) else f"{x:g}")
    if out == v:
        raise Skip
    return out


def _catalog(name: str) -> Injector:
    """The product-catalog injectors of ``dqd_server.catalog`` (check digits, percentages, years/prices)."""

    def run(v: str, r: random.Random, ctx: Context) -> str | None:
        from .. import catalog

        try:
            return catalog._INJECTORS[name](v, r, ctx.column)
        except catalog._Skip:
            raise Skip from None

    return run


KINDS: dict[str, Injector] = {
    "typo": typo, "substitute": substitute, "case": case, "whitespace": whitespace, "truncate": truncate,
    "truncation": truncate, "missing": missing, "swap": swap, "wrong_domain": wrong_domain, "digits": digits,
    "number_format": number_format, "unit": unit, "scale": scale,
    "check_digit": _catalog("check_digit"), "percentage": _catalog("percentage"),
    "out_of_range": _catalog("out_of_range"), "catalog_wrong_domain": _catalog("wrong_domain"),
}
