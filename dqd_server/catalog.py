"""A realistic sample product catalog and an error injector, so demos, tests and benchmarks have known truth."""
from __future__ import annotations

import random
import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CATALOG_COLUMNS: dict[str, str] = {c: c for c in (
    "article_number", "ean", "category", "material", "color_name", "size", "season", "care_instructions", "price")}

# category -> (department code, size run, material family, price range in euros, popularity weight)
_CATEGORIES: dict[str, tuple[str, str, str, tuple[int, int], float]] = {
    "T-Shirts": ("TS", "letter", "jersey", (8, 40), 10), "Tops": ("TS", "letter", "jersey", (8, 35), 5),
    "Shirts": ("TS", "letter", "woven", (20, 90), 5), "Blouses": ("TS", "numeric", "woven", (20, 80), 4),
    "Polo Shirts": ("TS", "letter", "jersey", (20, 90), 3), "Sweaters": ("KN", "letter", "knit", (25, 250), 6),
    "Cardigans": ("KN", "letter", "knit", (30, 200), 3), "Hoodies": ("KN", "letter", "jersey", (30, 100), 4),
    "Sweatshirts": ("KN", "letter", "jersey", (25, 90), 3), "Jackets": ("OW", "letter", "outer", (50, 400), 4),
    "Coats": ("OW", "numeric", "outer", (80, 600), 3), "Blazers": ("OW", "numeric", "woven", (60, 300), 2),
    "Vests": ("OW", "letter", "outer", (30, 150), 1), "Jeans": ("JN", "jeans", "denim", (30, 180), 8),
    "Trousers": ("TR", "numeric", "woven", (30, 150), 5), "Chinos": ("TR", "jeans", "woven", (30, 110), 2),
    "Shorts": ("TR", "letter", "woven", (15, 70), 2), "Skirts": ("DR", "numeric", "woven", (20, 120), 3),
    "Dresses": ("DR", "numeric", "woven", (25, 250), 7), "Jumpsuits": ("DR", "numeric", "woven", (40, 160), 1),
    "Leggings": ("LW", "letter", "stretch", (10, 60), 2), "Lingerie": ("LW", "letter", "stretch", (10, 80), 1),
    "Bras": ("LW", "letter", "stretch", (15, 70), 2), "Underwear": ("LW", "letter", "jersey", (5, 40), 3),
    "Socks": ("LW", "one", "stretch", (3, 20), 3), "Tights": ("LW", "letter", "stretch", (5, 25), 1),
    "Nightwear": ("LW", "letter", "jersey", (15, 70), 1), "Pyjamas": ("LW", "letter", "jersey", (20, 80), 1),
    "Swimwear": ("LW", "letter", "stretch", (20, 90), 2), "Sportswear": ("SP", "letter", "stretch", (15, 120), 3),
    "Tracksuits": ("SP", "letter", "stretch", (40, 150), 1), "Suits": ("SU", "numeric_men", "woven", (150, 900), 1),
    "Sneakers": ("SH", "shoes", "shoes", (40, 220), 5), "Boots": ("SH", "shoes", "shoes", (80, 350), 2),
    "Ankle Boots": ("SH", "shoes", "shoes", (70, 300), 2), "Sandals": ("SH", "shoes", "shoes", (25, 150), 2),
    "Loafers": ("SH", "shoes", "shoes", (60, 250), 1), "Slippers": ("SH", "shoes", "shoes", (15, 60), 1),
    "Bags": ("AC", "one", "accessory", (20, 900), 3), "Backpacks": ("AC", "one", "accessory", (30, 200), 1),
    "Wallets": ("AC", "one", "accessory", (15, 250), 1), "Belts": ("AC", "numeric_belt", "accessory", (15, 120), 1),
    "Scarves": ("AC", "one", "knit", (15, 200), 2), "Hats": ("AC", "one", "knit", (10, 80), 1),
    "Caps": ("AC", "one", "jersey", (10, 50), 1), "Gloves": ("AC", "letter", "knit", (15, 90), 1),
    "Ties": ("AC", "one", "woven", (20, 90), 1),
}
_SIZE_RUNS: dict[str, list[str]] = {
    "letter": ["XXS", "XS", "S", "M", "L", "XL", "XXL", "3XL", "4XL"],
    "numeric": [str(n) for n in range(32, 50, 2)],
    "numeric_men": [str(n) for n in range(44, 56, 2)],
    "numeric_belt": [str(n) for n in range(24, 42, 2)],
    "jeans": [f"W{w}/L{leg}" for w in range(26, 39, 2) for leg in (30, 32, 34)],
    "shoes": [f"{n / 2:g}" for n in range(70, 97)],
    "one": ["One Size"],
}
_FIBRES: dict[str, list[str]] = {
    "jersey": ["Cotton", "Organic Cotton", "Elastane", "Recycled Polyester", "Modal", "Viscose", "Polyester",
               "Lyocell"],
    "knit": ["Wool", "Merino Wool", "Cashmere", "Lambswool", "Alpaca", "Mohair", "Polyamide", "Acrylic", "Cotton",
             "Nylon", "Viscose"],
    "outer": ["Polyester", "Recycled Polyester", "Polyamide", "Recycled Polyamide", "Cotton", "Wool", "Elastane",
              "Polyurethane"],
    "denim": ["Cotton", "Organic Cotton", "Recycled Cotton", "Elastane", "Polyester", "Lyocell"],
    "woven": ["Cotton", "Linen", "Viscose", "Polyester", "Silk", "Lyocell", "Elastane", "Modal", "Wool", "Nylon"],
    "stretch": ["Polyamide", "Elastane", "Polyester", "Spandex", "Nylon", "Cotton", "Recycled Polyamide", "Modal"],
    "shoes": ["Leather", "Suede", "Rubber", "Polyurethane", "Textile", "Recycled Polyester", "Cotton"],
    "accessory": ["Leather", "Polyester", "Cotton", "Wool", "Acrylic", "Silk", "Polyurethane", "Cashmere"],
}
# colours roughly by popularity (all in rules/color_name)
COLOURS = ["Black", "White", "Navy", "Grey", "Blue", "Beige", "Dark Blue", "Light Blue", "Off White", "Brown",
           "Dark Grey", "Light Grey", "Green", "Red", "Pink", "Khaki", "Olive", "Camel", "Burgundy", "Ecru",
           "Sand", "Charcoal", "Anthracite", "Grey Melange", "Dark Green", "Cream", "Ivory", "Taupe", "Cognac",
           "Mustard", "Yellow", "Orange", "Coral", "Light Pink", "Lilac", "Purple", "Teal", "Turquoise", "Mint",
           "Royal Blue", "Cobalt", "Denim Blue", "Petrol", "Dark Brown", "Stone", "Bordeaux", "Dark Red", "Fuchsia",
           "Lavender", "Light Green", "Sky Blue", "Ochre", "Silver", "Gold", "Multicolour"]
# care instructions: group -> [(English, Dutch)]
_CARE: dict[str, list[tuple[str, str]]] = {
    "wash": [("Machine wash at 30°C", "Wassen op 30°C"), ("Machine wash at 40°C", "Wassen op 40°C"),
             ("Machine wash at 60°C", "Wassen op 60°C"), ("Machine wash cold", "Koud wassen"),
             ("Hand wash only", "Alleen handwas"), ("Wash inside out", "Binnenstebuiten wassen"),
             ("Wash with similar colours", "Wassen met gelijke kleuren")],
    "bleach": [("Do not bleach", "Niet bleken"), ("Non-chlorine bleach only", "Geen chloor gebruiken")],
    "dry": [("Do not tumble dry", "Niet in de droger"), ("Tumble dry low", "Trommeldrogen op lage temperatuur"),
            ("Line dry", "Aan de lijn drogen"), ("Dry flat", "Liggend drogen")],
    "iron": [("Iron on low heat", "Strijken op lage temperatuur"),
             ("Iron on medium heat", "Strijken op middelhoge temperatuur"), ("Do not iron", "Niet strijken")],
    "clean": [("Do not dry clean", "Niet chemisch reinigen"), ("Dry clean only", "Alleen chemisch reinigen")],
}
_NO_WASH = [("Do not wash", "Niet wassen"), ("Wipe with a damp cloth", "Afnemen met een vochtige doek")]


def _composition(rng: random.Random, fibres: list[str]) -> str:
    k = rng.choices((1, 2, 3), weights=(4, 5, 1))[0]
    names = rng.sample(fibres, k)
    if k == 1:
        pcts = [100]
    elif k == 2:
        main = rng.choice((50, 55, 60, 65, 70, 75, 78, 80, 85, 88, 90, 92, 95, 97, 98))
        pcts = [main, 100 - main]
    else:
        a = rng.choice((40, 50, 60, 70))
        b = rng.choice([x for x in (5, 10, 15, 20, 25, 30) if a + x < 100])
        pcts = [a, b, 100 - a - b]
    sep = rng.choice((" - ", ", "))
    return sep.join(f"{p}% {n}" for p, n in zip(pcts, names))


def _care(rng: random.Random, family: str) -> str:
    dutch = rng.random() < 0.35
    if family in ("shoes", "accessory") and rng.random() < 0.7:
        picks = [rng.choice(_NO_WASH), rng.choice(_CARE["bleach"])]
    else:
        picks = [rng.choice(_CARE["wash"])] + [rng.choice(_CARE[g]) for g in ("bleach", "dry", "iron", "clean")
                                               if rng.random() < 0.6]
    parts = [p[1] if dutch else p[0] for p in picks]
    sep = rng.choice((", ", "; ", ". "))
    if sep == ", " and rng.random() < 0.5:
        parts = parts[:1] + [p[0].lower() + p[1:] for p in parts[1:]]
    return sep.join(parts) + ("." if sep == ". " else "")


def _with_check_digit(body: np.ndarray, width: int) -> pa.Array:
    """GTIN strings: ``body`` (width-1 digits as integers) plus its check digit."""
    digits = (body[:, None] // 10 ** np.arange(width - 2, -1, -1)) % 10
    weights = np.where(np.arange(width - 1)[::-1] % 2 == 0, 3, 1)
    check = (10 - (digits @ weights) % 10) % 10
    text = pc.utf8_lpad(pc.cast(pa.array(body * 10 + check), pa.string()), width, padding="0")
    return text


def _unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    out = np.unique(rng.integers(low, high, size=int(n * 1.2) + 16))
    while len(out) < n:
        out = np.unique(np.r_[out, rng.integers(low, high, size=n)])
    return rng.permutation(out)[:n]


def generate_catalog(n_rows: int, seed: int = 0) -> pa.Table:
    """A catalog of ``n_rows`` product rows (all values correct by the bundled rules).

    Articles have Zipf-like popularity; each article comes in 1-3 colours and its category's size run,
    one EAN per variant. Rows are variants drawn by popularity, so values repeat realistically.
    """
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    n_articles = int(np.clip(n_rows // 20, 20, 20000))
    names = list(_CATEGORIES)
    cat_w = np.array([_CATEGORIES[c][4] for c in names], dtype=np.float64)
    cats = rng.choice(len(names), size=n_articles, p=cat_w / cat_w.sum())
    numbers = _unique_ints(rng, n_articles, 100000, 1000000)
    col_cw = np.cumsum(1.0 / (np.arange(len(COLOURS)) + 3)).tolist()
    years = list(range(2019, 2027))
    art_cols: dict[str, list[str]] = {k: [] for k in ("article_number", "category", "material", "season",
                                                      "care_instructions", "price")}
    var_article: list[int] = []
    var_colour: list[str] = []
    var_size: list[str] = []
    for a in range(n_articles):  # one iteration per distinct article (<= 20k)
        cat = names[cats[a]]
        dept, run, family, (lo, hi), _ = _CATEGORIES[cat]
        art_cols["article_number"].append(f"{dept}-{numbers[a]}")
        art_cols["category"].append(cat)
        art_cols["material"].append(_composition(prng, _FIBRES[family]))
        year = prng.choice(years)
        spring = prng.random() < 0.5
        art_cols["season"].append((("SS" if spring else "AW") + f"{year % 100:02d}") if prng.random() < 0.7
                                  else f"{'Spring/Summer' if spring else 'Autumn/Winter'} {year}")
        art_cols["care_instructions"].append(_care(prng, family))
        art_cols["price"].append(f"{prng.randint(lo, hi) + prng.choice((0.95, 0.99, 0.0, 0.5)):.2f}")
        sizes = _SIZE_RUNS[run]
        start = prng.randint(0, max(0, len(sizes) - 4))
        sizes = sizes[start: start + prng.randint(min(3, len(sizes)), min(8, len(sizes)))]
        colours = dict.fromkeys(prng.choices(COLOURS, cum_weights=col_cw, k=prng.choice((1, 1, 2, 3))))
        for colour in colours:
            var_colour.extend([colour] * len(sizes))
            var_size.extend(sizes)
            var_article.extend([a] * len(sizes))
    article = np.asarray(var_article, dtype=np.int64)
    n_var = len(article)
    ean8 = rng.random(n_var) < 0.04
    ean = _with_check_digit(870000000000 + _unique_ints(rng, n_var, 0, 10**10), 13)
    if ean8.any():
        short = _with_check_digit(8700000 + _unique_ints(rng, int(ean8.sum()), 0, 10**5), 8)
        ean = pc.replace_with_mask(ean, pa.array(ean8), short)
    pool = pa.table({
        "article_number": pa.array(art_cols["article_number"]).take(article),
        "ean": ean,
        "category": pa.array(art_cols["category"]).take(article),
        "material": pa.array(art_cols["material"]).take(article),
        "color_name": pa.array(var_colour, pa.string()),
        "size": pa.array(var_size, pa.string()),
        "season": pa.array(art_cols["season"]).take(article),
        "care_instructions": pa.array(art_cols["care_instructions"]).take(article),
        "price": pa.array(art_cols["price"]).take(article),
    })
    popularity = 1.0 / (rng.permutation(n_articles) + 1.0) ** 1.1  # Zipf over articles
    per_variant = popularity[article] / np.bincount(article, minlength=n_articles)[article]
    rows = rng.choice(n_var, size=n_rows, p=per_variant / per_variant.sum())
    return pool.take(pa.array(rows, pa.int64()))


# ---- error injection ------------------------------------------------------------------------------

INJECTED_SCHEMA = pa.schema([("row", pa.int64()), ("column", pa.string()), ("kind", pa.string()),
                             ("original", pa.string()), ("dirty", pa.string())])
ERROR_KINDS = ("typo", "case", "whitespace", "missing", "wrong_domain", "check_digit", "percentage", "out_of_range",
               "truncation")
COLUMN_KINDS: dict[str, tuple[str, ...]] = {
    "article_number": ("case", "whitespace", "missing", "truncation"),
    "ean": ("whitespace", "missing", "check_digit", "truncation"),
    "category": ("typo", "case", "whitespace", "missing"),
    "material": ("typo", "case", "whitespace", "missing", "wrong_domain", "percentage", "truncation"),
    "color_name": ("typo", "case", "whitespace", "missing", "wrong_domain", "truncation"),
    "size": ("case", "whitespace", "missing", "wrong_domain", "truncation"),
    "season": ("typo", "case", "whitespace", "missing", "out_of_range"),
    "care_instructions": ("typo", "whitespace", "missing", "truncation"),
    "price": ("whitespace", "missing", "out_of_range", "truncation"),
}
_GENERIC_KINDS = ("typo", "case", "whitespace", "missing", "truncation")
_WORD = re.compile(r"[^\W\d_]{3,}")


class _Skip(Exception):
    """This kind of error cannot be injected into this value."""


def _typo(v: str, r: random.Random, column: str) -> str:
    words = list(_WORD.finditer(v))
    if not words:
        raise _Skip
    long_words = [w for w in words if len(w.group()) >= 4] or words
    w = r.choice(long_words)
    s, word = w.start(), w.group()
    for _ in range(8):
        op, i = r.choice(("insert", "delete", "swap", "substitute")), r.randrange(1, len(word))
        letter = r.choice("abcdefghijklmnopqrstuvwxyz")
        new = {"insert": word[:i] + letter + word[i:], "delete": word[:i] + word[i + 1:],
               "swap": word[:i - 1] + word[i] + word[i - 1] + word[i + 1:],
               "substitute": word[:i] + letter + word[i + 1:]}[op]
        if new != word:
            return v[:s] + new + v[w.end():]
    raise _Skip


def _case(v: str, r: random.Random, column: str) -> str:
    options = [x for x in {v.lower(), v.upper(), v[:1].swapcase() + v[1:]} if x != v]
    if not options:
        raise _Skip
    return r.choice(sorted(options))


def _whitespace(v: str, r: random.Random, column: str) -> str:
    options = [" " + v, v + " ", "\t" + v] + ([v.replace(" ", "  ", 1)] if " " in v.strip() else [])
    return r.choice(options)


def _missing(v: str, r: random.Random, column: str) -> str | None:
    return None if r.random() < 0.5 else ""


def _wrong_domain(v: str, r: random.Random, column: str) -> str:
    pool = {"material": COLOURS, "color_name": _FIBRES["knit"] + _FIBRES["shoes"], "size": COLOURS}.get(
        column, list(_CATEGORIES))
    return r.choice([p for p in pool if p != v])


def _check_digit(v: str, r: random.Random, column: str) -> str:
    if not v.isdigit():
        raise _Skip
    return v[:-1] + str((int(v[-1]) + r.randint(1, 9)) % 10)


def _percentage(v: str, r: random.Random, column: str) -> str:
    numbers = list(re.finditer(r"\d+(?=\s*%)", v))
    if not numbers:
        raise _Skip
    m = r.choice(numbers)
    old = int(m.group())
    new = old + r.choice([d for d in (-15, -10, -5, 5, 10, 15) if 0 < old + d <= 100 and old + d != old])
    return v[:m.start()] + str(new) + v[m.end():]


def _out_of_range(v: str, r: random.Random, column: str) -> str:
    year4 = re.search(r"\d{4}$", v)
    if year4:
        return v[:year4.start()] + str(r.choice((r.randint(1970, 1999), r.randint(2040, 2099))))
    year2 = re.fullmatch(r"([A-Z]{2})\d{2}", v)
    if year2:
        return year2.group(1) + str(r.randint(40, 99))
    if re.fullmatch(r"\d+\.\d{2}", v):
        return r.choice(("0.00", "-" + v, f"{float(v) * 1000 + 100000:.2f}"))
    raise _Skip


def _truncation(v: str, r: random.Random, column: str) -> str:
    if len(v) < 2:
        raise _Skip
    cut = v[: r.randint(max(1, int(len(v) * 0.4)), len(v) - 1)]
    if not cut.strip():
        raise _Skip
    return cut


_INJECTORS: dict[str, Callable[[str, random.Random, str], str | None]] = {
    "typo": _typo, "case": _case, "whitespace": _whitespace, "missing": _missing, "wrong_domain": _wrong_domain,
    "check_digit": _check_digit, "percentage": _percentage, "out_of_range": _out_of_range, "truncation": _truncation,
}


def inject_errors(table: pa.Table, rate: float = 0.02, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Corrupt about ``rate`` of the non-null string cells; return (dirty table, injected cells).

    Each column gets the error kinds that make sense for it (``COLUMN_KINDS``; other string columns get
    typo/case/whitespace/missing/truncation). Every injected cell differs from its original.
    """
    rng = np.random.default_rng(seed)
    r = random.Random(seed)
    log: dict[str, list] = {k: [] for k in INJECTED_SCHEMA.names}
    columns = []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or not len(col):
            columns.append(col)
            continue
        rows = np.flatnonzero((rng.random(len(col)) < rate) & col.is_valid().to_numpy(zero_copy_only=False))
        kinds = COLUMN_KINDS.get(name, _GENERIC_KINDS)
        originals = col.take(pa.array(rows, pa.int64())).to_pylist()
        keep, dirty = [], []
        for row, original in zip(rows.tolist(), originals):  # one iteration per injected cell
            if not original:
                continue
            order = [r.choice(kinds)] + r.sample(kinds, len(kinds))
            for kind in order:
                try:
                    new = _INJECTORS[kind](original, r, name)
                except _Skip:
                    continue
                if new != original:
                    break
            else:
                continue
            keep.append(row)
            dirty.append(new)
            for key, val in zip(INJECTED_SCHEMA.names, (row, name, kind, original, new)):
                log[key].append(val)
        hit = np.zeros(len(col), dtype=bool)
        hit[keep] = True
        columns.append(pc.replace_with_mask(col, pa.array(hit), pa.array(dirty, col.type)) if keep else col)
    injected = pa.table(log, schema=INJECTED_SCHEMA)
    order = pc.sort_indices(injected, [("row", "ascending"), ("column", "ascending")])
    return pa.table(columns, names=table.column_names), injected.take(order)
