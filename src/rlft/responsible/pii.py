"""Find and replace personally identifiable information (PII) in text.

Detectors are regular expressions with a validation step where one exists: Luhn for card numbers,
ISO 7064 mod-97 and the country's length for IBANs, the ``ipaddress`` parser for IPs, and Google's
libphonenumber metadata (the ``phonenumbers`` package, in the ``responsible`` extra) for phone
numbers in national formats. Each match is replaced by a typed placeholder such as ``[EMAIL]``;
only counts per type are reported, never the matched values.
The expressions and checksums are in :mod:`rlft.responsible.pii_patterns`; this module decides
where in a text they apply and which detection wins where two overlap.

Types and placeholders:

    EMAIL       [EMAIL]        local@domain.tld, internationalised (josé@correo.es, 用户@例子.广告)
    PHONE       [PHONE]        +44 20 7946 0958, (555) 123-4567, 030 12345678, 01 42 68 53 00
    CARD        [CARD]         13-19 digits, optionally grouped, with a card network's prefix and
                               length, passing the Luhn check
    IBAN        [IBAN]         DE89 3704 0044 0532 0130 00, GB29NWBK60161331926819 (mod-97 checked)
    IP          [IP]           IPv4 and IPv6 (validated by ``ipaddress``)
    GOV_ID      [GOV_ID]       US SSN (123-45-6789), UK National Insurance (QQ 12 34 56 C, any
                               case), and any ID after a keyword such as "passport no." or "SSN:"
    DOB         [DOB]          a date after "date of birth", "DOB", "born on", "birthday", ...
    ADDRESS     [ADDRESS]      a street line: number, street name and a street suffix (+ unit);
                               "Hauptstraße 12", "12 rue de Rivoli", "Flat 3, Rose Court", PO boxes
    PERSON      [PERSON]       person names, only with an NER backend (spaCy + en_core_web_sm)

A bare number is never a phone number unless a phone word precedes it ("call 5551234567"):
arithmetic answers, order numbers and counts have no phone formatting, and a scrubber that turns
``99999*99999=9999800001`` into ``[PHONE]`` corrupts data. Nor is a date a date of birth unless
the text says so.

Limits, honestly: regexes find formats, not meaning. An order number written like a phone number
("(555) 123-4567") is reported as one; an address without a number or a street word, a name
without an NER backend, an obfuscated e-mail ("john dot smith at example dot com") are missed.
Precision and recall per type on the labelled set in ``tests/data/`` are in
``docs/responsible.md``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rlft.responsible import pii_patterns as patterns
from rlft.responsible.pii_patterns import card_number_valid, iban_valid, luhn_valid

__all__ = [
    "PHONE_REGIONS",
    "PII_TYPES",
    "FileScan",
    "PiiScrubber",
    "PiiSpan",
    "ScrubResult",
    "card_number_valid",
    "iban_valid",
    "luhn_valid",
    "ner_available",
    "phone_backend",
    "scan_file",
    "scrub_file",
]

PII_TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "GOV_ID", "DOB", "ADDRESS", "PERSON")


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


# Regions whose national formats are checked against libphonenumber's metadata.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "IE", "AU", "IN", "JP", "BR",
                 "MX", "PL", "SE", "DK", "NO", "PT", "CA", "NZ", "ZA")


@lru_cache(maxsize=1)
def _phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError:
        return None
    return phonenumbers


def phone_backend() -> str:
    """``"phonenumbers"`` when national formats are validated by libphonenumber, else ``"regex"``."""
    return "phonenumbers" if _phonenumbers() is not None else "regex"


def _phone_valid(value: str, digits: str, international: bool) -> bool:
    """Is ``value`` a phone number: possible for its country code if international, valid in one
    of ``PHONE_REGIONS`` if national (digit counts only without ``phonenumbers``)."""
    pn = _phonenumbers()
    if pn is None:
        return 8 <= len(digits) <= 15 if international else 9 <= len(digits) <= 12
    for region in ("DE",) if international else PHONE_REGIONS:  # DE: reads 00 as the exit code
        try:
            number = pn.parse(value, region)
        except pn.NumberParseException:
            continue
        if pn.is_possible_number(number) if international else pn.is_valid_number(number):
            return True
    return False


def _in_equation(text: str, start: int, end: int) -> bool:
    """Whether the number is an operand or result: ``=``, ``*``, ``/``, ``^`` or ``×`` next to it."""
    before, after = text[:start].rstrip()[-1:], text[end:].lstrip()[:1]
    return bool(before and before in "=*/×÷^<>") or bool(after and after in "=*/×÷^+<>")


def _find_phones(text: str) -> list[PiiSpan]:
    spans = []
    for m in patterns.PHONE.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        if not 7 <= len(digits) <= 15 or _in_equation(text, m.start(), m.end()):
            continue
        if patterns.NOT_PHONE_SHAPE.fullmatch(value.lstrip("+")) or patterns.DECIMAL.fullmatch(value):  # 04.0123450 is a fraction
            continue
        # 00 as the exit code only in a formatted number: 0010100903 is an identifier.
        international = value.startswith("+") or re.match(r"00[1-9]\d*[ \u00a0.-]", value) is not None
        formatted = bool(re.search(r"[ \u00a0./()-]", value))
        keyword = bool(patterns.PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]))
        if international:
            ok = len(digits) >= 8 and _phone_valid(value, digits, international=True)
        elif not formatted:  # a bare number: a phone only when the text says so
            ok = keyword and (len(digits) == 10 or _phone_valid(value, digits, international=False))
        elif patterns.NANP_SHAPE.fullmatch(value):  # (555) 123-4567, 555-123-4567, 1-800-555-0199
            ok = True
        elif re.search(r"(?<!\d)\d(?!\d)", value):  # a one-digit group: ISBN 0-306-40615-2, not a phone
            ok = False
        else:  # a national number starts with a trunk 0 (and has 9+ digits) unless the text says it is a phone
            trunk = digits.startswith("0") and len(digits) >= 9
            ok = (keyword or trunk) and _phone_valid(value, digits, international=False)
        if ok:
            spans.append(PiiSpan(m.start(), m.end(), "PHONE"))
    return spans


def _find_ibans(text: str) -> list[PiiSpan]:
    spans = []
    for m in patterns.IBAN.finditer(text):
        value, length = m.group(), patterns.IBAN_LENGTHS.get(m.group()[:2])
        if length is None:
            continue
        # The candidate may run into a following group ("... 0130 00 BIC"): cut it at the country's length.
        seen = cut = 0
        for cut, ch in enumerate(value, 1):  # noqa: B007 - cut is read after the loop
            seen += ch != " "
            if seen == length:
                break
        if seen == length and (cut == len(value) or value[cut] == " ") and iban_valid(value[:cut]):
            spans.append(PiiSpan(m.start(), m.start() + cut, "IBAN"))
    return spans


_NUMERIC_KINDS = frozenset({"PHONE", "CARD", "IBAN", "GOV_ID", "DOB"})


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


# Order is priority: where two detections overlap, the earlier detector wins.
_DETECTORS: list[tuple[str, Callable[[str], list[PiiSpan]]]] = [
    ("EMAIL", _find_regex(patterns.EMAIL, "EMAIL")),
    ("IP", _find_regex(patterns.IPV6, "IP", patterns.ipv6_ok)),  # before IPv4: ::ffff:192.0.2.1 is one address
    ("IP", _find_regex(patterns.IPV4, "IP")),
    ("IBAN", _find_ibans),
    ("CARD", _find_regex(patterns.CARD, "CARD", patterns.card_ok)),
    ("GOV_ID", _find_regex(patterns.SSN, "GOV_ID")),
    ("GOV_ID", _find_regex(patterns.UK_NI, "GOV_ID", patterns.uk_ni_ok)),
    ("GOV_ID", _find_regex(patterns.ID_AFTER_KEYWORD, "GOV_ID", lambda v: any(c.isdigit() for c in v), group=1)),
    ("DOB", _find_regex(patterns.DOB, "DOB", group=1)),  # before PHONE: 01.09.1983 is a date
    ("ADDRESS", _find_regex(patterns.ADDRESS_UNIT_FIRST, "ADDRESS")),
    ("ADDRESS", _find_regex(patterns.ADDRESS, "ADDRESS")),
    ("ADDRESS", _find_regex(patterns.ADDRESS_NAME_FIRST, "ADDRESS")),
    ("ADDRESS", _find_regex(patterns.ADDRESS_ROMANCE, "ADDRESS")),
    ("ADDRESS", _find_regex(patterns.PO_BOX, "ADDRESS")),
    ("PHONE", _find_phones),
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
                if kind in _NUMERIC_KINDS and _in_equation(text, span.start, span.end):
                    continue  # an operand or a result: 3089432-2965625=123807 holds no card number
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
