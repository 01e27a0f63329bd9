"""Find and replace personally identifiable information (PII) in text.

Detectors are regular expressions with a validation step where one exists (Luhn for card numbers,
the ``ipaddress`` parser for IPs, digit counts for phones). Each match is replaced by a typed
placeholder such as ``[EMAIL]``; only counts per type are reported, never the matched values.

Types and placeholders:

    EMAIL       [EMAIL]        local@domain.tld
    PHONE       [PHONE]        +44 20 7946 0958, (555) 123-4567, 555.123.4567, 07700 900123
    CARD        [CARD]         13-19 digits, optionally grouped, passing the Luhn check
    IP          [IP]           IPv4 and IPv6 (validated by ``ipaddress``)
    GOV_ID      [GOV_ID]       US SSN (123-45-6789), UK National Insurance (QQ 12 34 56 C), and
                               any ID after a keyword such as "passport no." or "SSN:"
    ADDRESS     [ADDRESS]      a street line: number, street name and a street suffix (+ unit)
    PERSON      [PERSON]       person names, only with an NER backend (spaCy + en_core_web_sm)

Limits, honestly: regexes find formats, not meaning. A 10-digit order number is reported as a
phone number; an address without a street suffix ("Flat 3, Rose Court") or a name without an NER
backend is missed. Precision and recall per type on the labelled set in ``tests/data/`` are in
``docs/responsible.md``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

PII_TYPES = ("EMAIL", "PHONE", "CARD", "IP", "GOV_ID", "ADDRESS", "PERSON")


@dataclass(frozen=True)
class PiiSpan:
    """One detected entity: ``text[start:end]`` is of type ``type``."""

    start: int
    end: int
    type: str


@dataclass
class ScrubResult:
    """Scrubbed text and how many entities of each type were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only): every second digit from the right is
    doubled (minus 9 above 9) and the sum must be divisible by 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d]|\.\d)"
)
# Candidates only; ipaddress.IPv6Address decides.
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
_PHONE = re.compile(
    r"""(?<![\w+/.-])
    (?:\+\d{1,3}[\s.-]?)?             # country code
    (?:\(0?\d{1,4}\)[\s.-]?)?         # area code in parentheses, e.g. (555) or (0)20
    (?:\d{1,5}(?:[\s.-]\d{2,6}){0,4}  # digit groups
       |\d{6,15})                     # or one run of digits
    (?![\w]|[.:-]\d)""",
    re.VERBOSE,
)
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_UK_NI = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
_ID_AFTER_KEYWORD = re.compile(
    r"""(?:\b(?:SSN|social\s+security\s+(?:number|no\.?)|passport(?:\s+(?:number|no\.?))?|
        national\s+(?:id|insurance)(?:\s+(?:number|no\.?))?|driver'?s?\s+licen[cs]e(?:\s+(?:number|no\.?))?|
        tax\s+id|NI\s+number|NINO|ID\s+(?:number|no\.?))\s*(?:is\s+|:|\#|-)?\s*)
    ([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])(?![A-Za-z0-9])""",
    re.VERBOSE | re.IGNORECASE,
)
_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|"
    r"Close|Crescent|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir|Row|Gardens|Grove|Hill|Walk"
)
_ADDRESS = re.compile(
    rf"""\b\d{{1,5}}[A-Za-z]?,?\s+
    (?:(?:[NSEW]\.?|North|South|East|West)\s+)?                   # direction
    (?:(?:[A-Z][a-z'’]+|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,3}}          # street name
    (?:{_STREET_SUFFIX})\b\.?
    (?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|\#)\.?\s*\#?[A-Za-z0-9-]+)?""",
    re.VERBOSE,
)


def _phone_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    grouped = bool(re.search(r"[\s.()-]", match))
    if match.startswith("+"):
        return 8 <= len(digits) <= 15
    if not grouped:  # a bare run of digits: a 10-digit number, or 11 with a trunk 0 or US 1
        return len(digits) == 10 or (len(digits) == 11 and digits[0] in "01")
    if re.match(r"\d{4}-\d{2}-\d{2}\b|\d{2}[./-]\d{2}[./-]\d{4}\b", match):  # a date
        return False
    return 10 <= len(digits) <= 13


def _find_regex(pattern: re.Pattern[str], kind: str, check: Callable[[str], bool] | None = None,
                group: int = 0) -> Callable[[str], list[PiiSpan]]:
    def find(text: str) -> list[PiiSpan]:
        spans = []
        for m in pattern.finditer(text):
            value = m.group(group)
            if check is None or check(value):
                spans.append(PiiSpan(m.start(group), m.end(group), kind))
        return spans

    return find


def _ipv6_ok(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return value.count(":") >= 2


# Order is priority: where two detections overlap, the earlier detector wins.
_DETECTORS: list[tuple[str, Callable[[str], list[PiiSpan]]]] = [
    ("EMAIL", _find_regex(_EMAIL, "EMAIL")),
    ("IP", _find_regex(_IPV6, "IP", _ipv6_ok)),  # before IPv4: ::ffff:192.0.2.1 is one address
    ("IP", _find_regex(_IPV4, "IP")),
    ("CARD", _find_regex(_CARD, "CARD", lambda v: luhn_valid(re.sub(r"\D", "", v)))),
    ("GOV_ID", _find_regex(_SSN, "GOV_ID")),
    ("GOV_ID", _find_regex(_UK_NI, "GOV_ID")),
    ("GOV_ID", _find_regex(_ID_AFTER_KEYWORD, "GOV_ID", lambda v: any(c.isdigit() for c in v), group=1)),
    ("ADDRESS", _find_regex(_ADDRESS, "ADDRESS")),
    ("PHONE", _find_regex(_PHONE, "PHONE", _phone_ok)),
]


@lru_cache(maxsize=1)
def _spacy_pipeline() -> Any:
    try:
        import spacy

        return spacy.load("en_core_web_sm", disable=["parser", "lemmatizer"])
    except (ImportError, OSError):
        return None


def ner_available() -> bool:
    """True when person names can be detected (spaCy with the ``en_core_web_sm`` model)."""
    return _spacy_pipeline() is not None


def _find_persons(text: str) -> list[PiiSpan]:
    nlp = _spacy_pipeline()
    if nlp is None:
        return []
    return [PiiSpan(e.start_char, e.end_char, "PERSON") for e in nlp(text).ents if e.label_ == "PERSON"]


class PiiScrubber:
    """Detects and replaces PII.

    types: which entity types to handle (default all of ``PII_TYPES``).
    ner:   "auto" uses an NER backend for PERSON when one is installed; False never does.
    """

    def __init__(self, types: Iterable[str] | None = None, ner: bool | str = "auto") -> None:
        self.types = tuple(types) if types is not None else PII_TYPES
        unknown = [t for t in self.types if t not in PII_TYPES]
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; valid: {', '.join(PII_TYPES)}")
        self.use_ner = "PERSON" in self.types and ner is not False and ner_available()

    def find(self, text: str) -> list[PiiSpan]:
        """Non-overlapping entities in ``text``, sorted by position."""
        taken: list[PiiSpan] = []
        detectors = list(_DETECTORS)
        if self.use_ner:
            detectors.append(("PERSON", _find_persons))
        for kind, detect in detectors:
            if kind not in self.types:
                continue
            for span in detect(text):
                if all(span.end <= t.start or span.start >= t.end for t in taken):
                    taken.append(span)
        return sorted(taken, key=lambda s: s.start)

    def scrub(self, text: str) -> ScrubResult:
        """``text`` with each entity replaced by ``[TYPE]``."""
        spans = self.find(text)
        parts, last = [], 0
        for span in spans:
            parts += [text[last : span.start], f"[{span.type}]"]
            last = span.end
        parts.append(text[last:])
        return ScrubResult("".join(parts), Counter(s.type for s in spans))

    def scrub_record(self, record: Any, counts: Counter[str] | None = None) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings) with every string scrubbed.

        Dictionary keys are kept as they are. Counts are added to ``counts`` when given.
        """
        if isinstance(record, str):
            result = self.scrub(record)
            if counts is not None:
                counts.update(result.counts)
            return result.text
        if isinstance(record, dict):
            return {k: self.scrub_record(v, counts) for k, v in record.items()}
        if isinstance(record, (list, tuple)):
            return [self.scrub_record(v, counts) for v in record]
        return record


@dataclass
class FileScan:
    """What ``scan_file`` found: counts per type and the line numbers (1-based) of each type."""

    path: str
    lines_read: int
    counts: Counter[str] = field(default_factory=Counter)
    lines: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)
    """Matched values, only filled when asked for (``keep_values=True``)."""


def _read_lines(path: str) -> Iterable[tuple[int, Any]]:
    """(line number, JSON value or text) for each non-empty line; JSONL when the name says so."""
    from pathlib import Path

    from rlft.errors import RlftError

    file = Path(path)
    if not file.is_file():
        raise RlftError(f"{path} is not a file.")
    is_jsonl = _is_jsonl(path)
    with file.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not is_jsonl:
                yield number, line.rstrip("\n")
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise RlftError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from None


def _is_jsonl(path: str) -> bool:
    return str(path).endswith((".jsonl", ".ndjson"))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def scan_file(path: str, scrubber: PiiScrubber | None = None, keep_values: bool = False) -> FileScan:
    """Find PII in a text file (each line) or a JSONL file (each string in each record)."""
    scrubber = scrubber or PiiScrubber()
    scan = FileScan(str(path), 0)
    for number, value in _read_lines(path):
        scan.lines_read += 1
        for text in _strings(value):
            for span in scrubber.find(text):
                scan.counts[span.type] += 1
                lines = scan.lines.setdefault(span.type, [])
                if not lines or lines[-1] != number:
                    lines.append(number)
                if keep_values:
                    scan.values.setdefault(span.type, []).append(text[span.start : span.end])
    return scan


def scrub_file(src: str, dst: str, scrubber: PiiScrubber | None = None) -> Counter[str]:
    """Write a scrubbed copy of ``src`` (text or JSONL) to ``dst``; returns counts per type."""
    from pathlib import Path

    scrubber = scrubber or PiiScrubber()
    counts: Counter[str] = Counter()
    out = []
    for _, value in _read_lines(src):
        scrubbed = scrubber.scrub_record(value, counts)
        out.append(json.dumps(scrubbed, ensure_ascii=False) if _is_jsonl(src) else scrubbed)
    Path(dst).write_text("".join(line + "\n" for line in out), encoding="utf-8")
    return counts
