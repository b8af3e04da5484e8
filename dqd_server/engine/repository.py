r"""The rules repository: per field type, versioned plain-data rules that the detectors execute.

Layout (like a Triton model repository; the highest numeric version folder serves)::

    rules/
      color_name/
        1/field.yaml
        2/field.yaml            # <- serves
        2/known_values.txt      # data file referenced from field.yaml
      material/
        1/field.yaml
        1/vocabulary.txt

A field type's name is its folder name (``[a-z][a-z0-9_]*``). Folders and files whose name starts
with ``.`` or ``_`` are ignored, as are non-numeric version folders; a field folder without any
numeric version folder is an error. Data files hold one value per line (UTF-8; blank lines and lines
starting with ``#`` are skipped; surrounding whitespace is stripped). Values listed in YAML must be
strings: quote what YAML would read as a number or boolean (``'42'``, ``'Yes'``).

``field.yaml``::

    description: Colour name as shown to shoppers, e.g. "Light Blue".   # required
    validation:                    # method "validation": checks run in order; a value gets a hit
      - kind: required             # from the FIRST check it fails only, so list specific ones first
      - kind: whitespace
      - kind: regex
        must_match: '[A-Z][a-z]+'  # RE2, full match; must_not_match: RE2, found anywhere
        code: BAD_FORMAT           # optional: every check has a default code, message, confidence
        message: "'{value}' is not a colour name"   # {value} and the check's params
        confidence: 0.8
    pattern:                       # method "pattern": each part is optional
      known_values:                # or a plain list: known_values: [Black, White]
        file: known_values.txt     # or values: [...]; both may be given
        closed: true               # false: only near misses and case mismatches are reported
        min_similarity: 0.75       # normalized OSA similarity (0..1) for a near miss
        max_distance: 2            # optional: and at most this many edits (long values share long parts);
                                   # with it, values that differ only in their digits are no near misses
        term: colour               # word used in messages: "'Bleu' is not a known colour; ..."
      vocabulary:                  # token level, for free-text-ish fields
        file: vocabulary.txt       # or words: [...]; words are split like values
        case_insensitive: true     # false: "cotton" for "Cotton" is a CASE_MISMATCH
        min_similarity: 0.75
        split_pattern: '[^\pL]+'   # RE2 separating tokens (default: anything but letters)
        min_token_length: 2        # shorter tokens are not checked
        term: material term
      formats:                     # a value matching no signature and no regex -> BAD_FORMAT
        signatures: ['AA-999999']  # shape: upper letter A, other letter a, digit 9, rest kept
        regexes: ['\d{13}']        # RE2, full match
      rarity:                      # opt-in: rare shapes among the distinct values of one call
        min_values: 200            # only when the call has at least this many distinct values
        max_share: 0.005           # a shape held by fewer than this share -> RARE_FORMAT
      confidence: {NEAR_MISS: 0.9} # optional per-code confidence overrides
    weights: {validation: 0.98, pattern: 0.4, dependency: 0.9}   # optional: each method's measured F1 on this
                                   # field type; method "combined" weighs their findings by it (default 1.0)
    profile: {...}                 # optional, free-form: what `dqd profile` learned (not read by detectors)

Cross-column rules (method "dependency") live in ``dependencies.yaml`` at the repository root (written by
``dqd profile``; see ``engine/dependency.py``); their data files sit in ``_dependencies/``.

Validation check kinds and their parameters (defaults in brackets):

    required          null, empty or blank value                               [MISSING]
    whitespace        leading, trailing or repeated whitespace                 [WHITESPACE]
    regex             must_match and/or must_not_match (RE2)                   [BAD_FORMAT]
    allowed_values    values and/or file, case_insensitive [false]             [NOT_ALLOWED]
    length            min and/or max characters                                [BAD_LENGTH]
    numeric_range     min, max, min_exclusive [false], max_exclusive [false];  [OUT_OF_RANGE]
                      not_numeric_code [NOT_NUMERIC], not_numeric_message
    year_range        min, max, pattern (RE2 with a group named year)          [OUT_OF_RANGE]
                      [(?P<year>\d{4}|\d{2})], two_digit_base [2000]
    gtin_check_digit  lengths [8, 12, 13, 14]; invalid_code [BAD_GTIN],        [BAD_CHECK_DIGIT]
                      invalid_message
    composition_sum   total [100], tolerance [0.05]: the "NN%" numbers of a    [BAD_COMPOSITION]
                      value must add up to total (values without % are skipped)
    null_tokens       tokens (spellings of "no value", compared trimmed and    [NULL_TOKEN]
                      case-insensitively), canonical [""]: how this table spells
                      a missing value. A token other than canonical is flagged;
                      with a non-empty canonical, an empty (not null) value too

Pattern codes (default confidence): CASE_MISMATCH (0.8) the value or a token differs from a known
spelling only in case; NEAR_MISS (0.85) close to a known value / vocabulary word, the message names
the suggestion; UNKNOWN_VALUE (0.7) not a known value (closed lists only); UNKNOWN_TOKEN (0.5) a word
not in the vocabulary and not close to one; BAD_FORMAT (0.75) no signature or regex fits;
RARE_FORMAT (0.3) a shape few of the call's distinct values share. Before the pattern checks values
are trimmed and inner whitespace is collapsed (whitespace is validation's business); each value gets
at most one pattern hit, tried in the order known_values, vocabulary, formats, rarity.

Only ``required`` and ``null_tokens`` look at null/empty values; every other check skips them. Messages are Python
format strings over ``value`` (shortened to 80 characters), the check's params and per-kind extras
(length: ``length``, ``range``; numeric_range: ``range``; year_range: ``year``, ``range``; gtin_check_digit:
``actual``, ``expected``; composition_sum: ``sum``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

BUNDLED_RULES: Path = Path(__file__).resolve().parent.parent / "rules"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: profiles can be large
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class CheckSpec:
    """One validation check: ``kind`` selects the logic, ``params`` are its resolved settings."""

    code: str
    kind: str
    message: str
    confidence: float
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class KnownValuesSpec:
    values: tuple[str, ...]
    closed: bool = True
    min_similarity: float = 0.8
    term: str = "value"
    max_distance: int | None = None  # a near miss also needs at most this many edits (OSA distance)


@dataclass(frozen=True)
class VocabularySpec:
    words: tuple[str, ...]
    case_insensitive: bool = True
    min_similarity: float = 0.8
    split_pattern: str = r"[^\pL]+"
    min_token_length: int = 2
    term: str = "term"


@dataclass(frozen=True)
class FormatsSpec:
    signatures: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()  # already anchored for full-match semantics


@dataclass(frozen=True)
class RaritySpec:
    min_values: int = 200
    max_share: float = 0.005


@dataclass(frozen=True)
class PatternSpec:
    known_values: KnownValuesSpec | None = None
    vocabulary: VocabularySpec | None = None
    formats: FormatsSpec | None = None
    rarity: RaritySpec | None = None
    confidence: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def parts(self) -> int:
        """Number of configured parts (shown as the method's number of checks)."""
        return sum(p is not None for p in (self.known_values, self.vocabulary, self.formats, self.rarity))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    version: str
    description: str
    validation: tuple[CheckSpec, ...]
    pattern: PatternSpec | None
    path: Path  # the field.yaml this spec was read from
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # method -> measured F1
    profile: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # free-form metadata


# kind -> (default code, default message, default confidence, allowed params)
CHECK_KINDS: dict[str, tuple[str, str, float, frozenset[str]]] = {
    "required": ("MISSING", "value is missing", 0.95, frozenset()),
    "whitespace": ("WHITESPACE", "'{value}' has leading, trailing or repeated whitespace", 0.9, frozenset()),
    "regex": ("BAD_FORMAT", "'{value}' does not have the expected format", 0.8,
              frozenset({"must_match", "must_not_match"})),
    "allowed_values": ("NOT_ALLOWED", "'{value}' is not an allowed value", 0.8,
                       frozenset({"values", "file", "case_insensitive"})),
    "length": ("BAD_LENGTH", "'{value}' has {length} characters, expected {range}", 0.8,
               frozenset({"min", "max"})),
    "numeric_range": ("OUT_OF_RANGE", "'{value}' is out of range ({range})", 0.85,
                      frozenset({"min", "max", "min_exclusive", "max_exclusive", "not_numeric_code",
                                 "not_numeric_message"})),
    "year_range": ("OUT_OF_RANGE", "'{value}' has year {year}, expected {range}", 0.85,
                   frozenset({"min", "max", "pattern", "two_digit_base"})),
    "gtin_check_digit": ("BAD_CHECK_DIGIT", "'{value}' has check digit {actual}, expected {expected}", 0.95,
                         frozenset({"lengths", "invalid_code", "invalid_message"})),
    "composition_sum": ("BAD_COMPOSITION", "'{value}' percentages add up to {sum}, not {total}", 0.9,
                        frozenset({"total", "tolerance"})),
    "null_tokens": ("NULL_TOKEN", "'{value}' stands for a missing value", 0.9,
                    frozenset({"tokens", "canonical"})),
}
_SAMPLE_EXTRAS = {"value": "x", "length": 1, "range": "1..2", "year": 2000, "actual": 1, "expected": 2, "sum": 1}


def load_repository(root: Path) -> dict[str, FieldSpec]:
    """Load the serving (highest) version of every field type under ``root``.

    Raises ``ValueError`` naming the file and the problem for anything malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"rules repository {root} is not a directory")
    specs: dict[str, FieldSpec] = {}
    for field_dir in sorted(root.iterdir()):
        if not field_dir.is_dir() or field_dir.name[:1] in "._":
            continue
        if not _NAME.match(field_dir.name):
            raise ValueError(f"{field_dir}: field type folder names must match {_NAME.pattern}")
        versions = [d for d in field_dir.iterdir() if d.is_dir() and d.name.isdigit()]
        if not versions:
            raise ValueError(f"{field_dir}: no numeric version folder (expected e.g. {field_dir / '1'})")
        best = max(versions, key=lambda d: int(d.name))
        specs[field_dir.name] = load_field(best / "field.yaml", field_dir.name, str(int(best.name)))
    return specs


def load_field(path: Path, name: str, version: str) -> FieldSpec:
    """Parse one ``field.yaml`` (data files are resolved relative to its folder)."""
    if not path.is_file():
        raise ValueError(f"{path}: missing field.yaml")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # safe: no Python objects
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    ctx = _Ctx(path)
    doc = ctx.mapping(doc, "the file", {"description", "validation", "pattern", "weights", "profile"})
    if "description" not in doc:
        raise ValueError(f"{path}: missing key 'description'")
    description = ctx.string(doc["description"], "description")
    raw_checks = doc.get("validation") or []
    if not isinstance(raw_checks, list):
        raise ValueError(f"{path}: 'validation' must be a list of checks")
    checks = tuple(ctx.check(c, i) for i, c in enumerate(raw_checks))
    pattern = ctx.pattern(doc["pattern"]) if doc.get("pattern") is not None else None
    weights = ctx.weights(doc.get("weights"))
    profile = ctx.mapping(doc.get("profile") or {}, "profile", _AnyKey())
    return FieldSpec(name, version, description, checks, pattern, path, weights, MappingProxyType(dict(profile)))


class _AnyKey(frozenset):
    """Allows every key (for free-form mappings)."""

    def __contains__(self, item: object) -> bool:
        return True


def validate_regex(pattern: str) -> str | None:
    """Return RE2's complaint about ``pattern``, or None when pyarrow compiles it."""
    try:
        # pyarrow only compiles the regex when there is at least one value to match
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
        return str(exc)
    return None


def full_match(pattern: str) -> str:
    return f"^(?:{pattern})$"


def read_lines(path: Path) -> tuple[str, ...]:
    """Read a one-value-per-line data file."""
    if not path.is_file():
        raise ValueError(f"{path}: data file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read data file: {exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


class _Ctx:
    """Validation helpers that prefix every error with the file (and item) being read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> ValueError:
        return ValueError(f"{self.path}: {where}: {what}")

    def mapping(self, v: Any, where: str, allowed: set[str] | frozenset[str]) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"expected a mapping, got {type(v).__name__}")
        unknown = sorted(str(k) for k in v if k not in allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return v

    def string(self, v: Any, where: str) -> str:
        if not isinstance(v, str):
            raise self.fail(where, f"expected a string, got {v!r}")
        return v

    def number(self, v: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(where, f"expected a number, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(where, f"{v!r} is outside {lo}..{hi}")
        return float(v) if isinstance(v, float) else v

    def boolean(self, v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(where, f"expected true or false, got {v!r}")
        return v

    def regex(self, v: Any, where: str) -> str:
        pattern = self.string(v, where)
        problem = validate_regex(pattern)
        if problem:
            raise self.fail(where, f"bad regular expression {pattern!r}: {problem}")
        return pattern

    def strings(self, v: Any, where: str) -> tuple[str, ...]:
        if not isinstance(v, list):
            raise self.fail(where, f"expected a list of strings, got {v!r}")
        odd = [s for s in v if not isinstance(s, str)]
        if odd:
            raise self.fail(where, f"expected strings, got {odd[:3]!r}; quote values YAML reads as numbers or "
                                   "booleans (e.g. '42', 'Yes', 'No')")
        return tuple(v)

    def values(self, d: Mapping[str, Any], where: str, list_key: str) -> tuple[str, ...]:
        """Values from ``d[list_key]`` and/or the data file ``d['file']``."""
        out: tuple[str, ...] = ()
        if list_key in d:
            out += self.strings(d[list_key], f"{where}.{list_key}")
        if "file" in d:
            name = self.string(d["file"], f"{where}.file")
            try:
                out += read_lines(self.path.parent / name)
            except ValueError as exc:
                raise self.fail(f"{where}.file", str(exc)) from None
        if not out:
            raise self.fail(where, f"needs '{list_key}' or 'file' with at least one value")
        return tuple(dict.fromkeys(out))

    def check(self, raw: Any, i: int) -> CheckSpec:
        where = f"validation[{i}]"
        if not isinstance(raw, dict) or "kind" not in raw:
            raise self.fail(where, "each check must be a mapping with a 'kind'")
        kind = raw["kind"]
        if kind not in CHECK_KINDS:
            raise self.fail(where, f"unknown check kind {kind!r}; known: {sorted(CHECK_KINDS)}")
        where = f"validation[{i}] ({kind})"
        code, message, confidence, allowed = CHECK_KINDS[kind]
        self.mapping(raw, where, allowed | {"kind", "code", "message", "confidence"})
        code = self.string(raw.get("code", code), f"{where}.code")
        if not _CODE.match(code):
            raise self.fail(f"{where}.code", f"{code!r} must be UPPER_SNAKE_CASE")
        message = self.string(raw.get("message", message), f"{where}.message")
        confidence = self.number(raw.get("confidence", confidence), f"{where}.confidence", 0.0, 1.0)
        params = self.params(kind, {k: v for k, v in raw.items() if k in allowed}, where)
        for key in ("message", "not_numeric_message", "invalid_message"):
            template = message if key == "message" else params.get(key)
            if template is not None:
                try:
                    template.format_map({**_SAMPLE_EXTRAS, **params})
                except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                    raise self.fail(f"{where}.{key}", f"bad message template {template!r}: {exc!r}") from None
        return CheckSpec(code, kind, message, float(confidence), MappingProxyType(params))

    def params(self, kind: str, p: dict[str, Any], where: str) -> dict[str, Any]:
        for key in ("min", "max", "total", "tolerance", "two_digit_base"):
            if key in p:
                p[key] = self.number(p[key], f"{where}.{key}")
        for key in ("case_insensitive", "min_exclusive", "max_exclusive"):
            if key in p:
                p[key] = self.boolean(p[key], f"{where}.{key}")
        for key in ("not_numeric_code", "invalid_code"):
            if key in p and not _CODE.match(self.string(p[key], f"{where}.{key}")):
                raise self.fail(f"{where}.{key}", f"{p[key]!r} must be UPPER_SNAKE_CASE")
        for key in ("not_numeric_message", "invalid_message"):
            if key in p:
                self.string(p[key], f"{where}.{key}")
        if kind == "regex":
            if "must_match" not in p and "must_not_match" not in p:
                raise self.fail(where, "needs 'must_match' and/or 'must_not_match'")
            for key in ("must_match", "must_not_match"):
                if key in p:
                    p[key] = self.regex(p[key], f"{where}.{key}")
        elif kind == "allowed_values":
            p["values"] = self.values(p, where, "values")
            p.pop("file", None)
        elif kind in ("length", "numeric_range", "year_range"):
            if "min" not in p and "max" not in p:
                raise self.fail(where, "needs 'min' and/or 'max'")
            if "min" in p and "max" in p and p["min"] > p["max"]:
                raise self.fail(where, f"min {p['min']} is greater than max {p['max']}")
            p.setdefault("min", None)
            p.setdefault("max", None)
            if kind == "year_range":
                pattern = self.regex(p.get("pattern", r"(?P<year>\d{4}|\d{2})"), f"{where}.pattern")
                try:  # extract_regex also refuses unnamed groups
                    names = pc.extract_regex(pa.array([""], pa.string()), pattern).type.names
                except pa.ArrowInvalid as exc:
                    raise self.fail(f"{where}.pattern", f"{pattern!r}: {exc}; use one capture group named year "
                                                        "(?P<year>...) and (?:...) for any other group") from None
                if "year" not in names:
                    raise self.fail(f"{where}.pattern", "needs a capture group named year: (?P<year>...)")
                p["pattern"] = pattern
                p.setdefault("two_digit_base", 2000)
        elif kind == "gtin_check_digit":
            lengths = p.get("lengths", [8, 12, 13, 14])
            if not isinstance(lengths, list) or not lengths or not all(
                    isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= 18 for n in lengths):
                raise self.fail(f"{where}.lengths", f"expected a list of lengths between 2 and 18, got {lengths!r}")
            p["lengths"] = tuple(sorted(set(lengths)))
        elif kind == "composition_sum":
            p.setdefault("total", 100)
            p.setdefault("tolerance", 0.05)
        elif kind == "null_tokens":
            if "tokens" not in p:
                raise self.fail(where, "needs 'tokens': the spellings of a missing value, e.g. ['N/A', 'null']")
            p["tokens"] = tuple(dict.fromkeys(t.strip().lower() for t in self.strings(p["tokens"], f"{where}.tokens")))
            p["canonical"] = self.string(p.get("canonical", ""), f"{where}.canonical")
        return p

    def weights(self, raw: Any) -> Mapping[str, float]:
        if raw is None:
            return MappingProxyType({})
        raw = self.mapping(raw, "weights", _AnyKey())
        return MappingProxyType({self.string(k, "weights"): float(self.number(v, f"weights.{k}", 0.0, 1.0))
                                 for k, v in raw.items()})

    def pattern(self, raw: Any) -> PatternSpec:
        where = "pattern"
        raw = self.mapping(raw, where, {"known_values", "vocabulary", "formats", "rarity", "confidence"})
        known = vocab = formats = rarity = None
        if raw.get("known_values") is not None:
            kv = raw["known_values"]
            if isinstance(kv, list):
                kv = {"values": kv}
            w = f"{where}.known_values"
            kv = self.mapping(kv, w, {"values", "file", "closed", "min_similarity", "term", "max_distance"})
            known = KnownValuesSpec(
                values=self.values(kv, w, "values"),
                closed=self.boolean(kv.get("closed", True), f"{w}.closed"),
                min_similarity=float(self.number(kv.get("min_similarity", 0.8), f"{w}.min_similarity", 0.0, 1.0)),
                term=self.string(kv.get("term", "value"), f"{w}.term"),
                max_distance=(int(self.number(kv["max_distance"], f"{w}.max_distance", 0))
                              if kv.get("max_distance") is not None else None),
            )
        if raw.get("vocabulary") is not None:
            w = f"{where}.vocabulary"
            vc = self.mapping(raw["vocabulary"], w, {"words", "file", "case_insensitive", "min_similarity",
                                                     "split_pattern", "min_token_length", "term"})
            vocab = VocabularySpec(
                words=self.values(vc, w, "words"),
                case_insensitive=self.boolean(vc.get("case_insensitive", True), f"{w}.case_insensitive"),
                min_similarity=float(self.number(vc.get("min_similarity", 0.8), f"{w}.min_similarity", 0.0, 1.0)),
                split_pattern=self.regex(vc.get("split_pattern", r"[^\pL]+"), f"{w}.split_pattern"),
                min_token_length=int(self.number(vc.get("min_token_length", 2), f"{w}.min_token_length", 1)),
                term=self.string(vc.get("term", "term"), f"{w}.term"),
            )
        if raw.get("formats") is not None:
            w = f"{where}.formats"
            fm = self.mapping(raw["formats"], w, {"signatures", "regexes"})
            sigs = self.strings(fm.get("signatures", []), f"{w}.signatures")
            regexes = tuple(full_match(self.regex(r, f"{w}.regexes"))
                            for r in self.strings(fm.get("regexes", []), f"{w}.regexes"))
            if not sigs and not regexes:
                raise self.fail(w, "needs 'signatures' and/or 'regexes'")
            formats = FormatsSpec(sigs, regexes)
        if raw.get("rarity") is not None:
            w = f"{where}.rarity"
            rr = self.mapping(raw["rarity"], w, {"min_values", "max_share"})
            rarity = RaritySpec(
                min_values=int(self.number(rr.get("min_values", 200), f"{w}.min_values", 1)),
                max_share=float(self.number(rr.get("max_share", 0.005), f"{w}.max_share", 0.0, 1.0)),
            )
        conf = self.mapping(raw.get("confidence") or {}, f"{where}.confidence", frozenset(PATTERN_CODES))
        conf = {k: float(self.number(v, f"{where}.confidence.{k}", 0.0, 1.0)) for k, v in conf.items()}
        spec = PatternSpec(known, vocab, formats, rarity, MappingProxyType(conf))
        if not spec.parts:
            raise self.fail(where, "needs at least one of known_values, vocabulary, formats, rarity")
        return spec


# code -> default confidence of the pattern method
PATTERN_CODES: dict[str, float] = {
    "CASE_MISMATCH": 0.8,
    "NEAR_MISS": 0.85,
    "UNKNOWN_VALUE": 0.7,
    "UNKNOWN_TOKEN": 0.5,
    "BAD_FORMAT": 0.75,
    "RARE_FORMAT": 0.3,
}
