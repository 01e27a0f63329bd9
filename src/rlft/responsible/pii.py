"""Find and replace personally identifiable information (PII) in text.

Detectors are regular expressions with a validation step where one exists: Luhn for card numbers,
ISO 7064 mod-97 and the country's length for IBANs, the ``ipaddress`` parser for IPs, and Google's
libphonenumber metadata (the ``phonenumbers`` package, in the ``responsible`` extra) for phone
numbers in national formats. Each match is replaced by a typed placeholder such as ``[EMAIL]``;
only counts per type are reported, never the matched values.

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

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

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


# Unicode-aware: \w covers internationalised local parts and domains (RFC 6531); an apostrophe may
# sit inside a local part (o'neil@...). The TLD is letters or an xn-- label.
_EMAIL = re.compile(
    r"(?<![\w.+-])[^\W_](?:[\w.!#$%&'*+/=?^`{|}~-]*[\w!#$%&*+/=?^`{|}~-])?"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])"
)
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")  # not in a decimal or a hash
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d]|\.\d)"
)
# Candidates only; ipaddress.IPv6Address decides.
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
# Candidates only; _phone_ok decides (with libphonenumber's metadata when installed).
_PHONE = re.compile(
    r"""(?<![\w+/.=*-])
    (?:(?:\+|00)\d{1,3}[ \u00a0.-]?)?        # country code
    (?:\(0\)[ \u00a0.-]?)?                    # (0): the trunk prefix in an international number
    (?:\(0?\d{1,4}\)[ \u00a0./-]?)?           # area code in parentheses, e.g. (555) or (02)
    \d{1,15}(?:(?:[ \u00a0./-]|\ /\ )\d{1,8}){0,5}  # digit groups
    (?![\w]|[.:/-]\d)""",
    re.VERBOSE,
)
# A phone word shortly before a number, with no other digits in between.
_PHONE_CONTEXT = re.compile(
    r"""(?:\b(?:call|phone|tel|telephone|mobile|mob|cell|fax|ring|text\s+me|sms|whats\s?app|contact|
        reach|dial|landline|hotline|helpline|llama|llámame|appel\w*|anruf\w*|ruf|telefon\w*|
        t[ée]l[ée]phone|handy|mobil\w*|portable|cellulare|chiamami)\b)[^\d\n]{0,20}$""",
    re.VERBOSE | re.IGNORECASE,
)
_NANP_SHAPE = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\)[ ]?|\d{3}([ .-]))\d{3}[ .-]\d{4}")
_DECIMAL = re.compile(r"[+-]?\d+\.\d+")  # +35236450.6 is a signed decimal, not Luxembourg
# Shapes that are not phone numbers: dates, US ZIP+4 codes.
_NOT_PHONE_SHAPE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{5}-\d{4}")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
# Upper or lower case ("qq 12 34 56 c"): the prefix rules are checked on the upper-cased value.
_UK_NI = re.compile(r"\b[A-Z]{2}([ -]?)\d{2}\1\d{2}\1\d{2}\1[A-D]\b", re.IGNORECASE)
_UK_NI_PREFIX = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]")
_ID_AFTER_KEYWORD = re.compile(
    r"""(?:\b(?:SSN|social\s+security\s+(?:number|no\.?)|passport(?:\s+(?:number|no\.?))?|
        national\s+(?:id|insurance)(?:\s+(?:number|no\.?))?|driver'?s?\s+licen[cs]e(?:\s+(?:number|no\.?))?|
        tax\s+id|NI\s+number|NINO|ID\s+(?:number|no\.?))\s*(?:is\s+|:|\#|-)?\s*)
    ([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])(?![A-Za-z0-9])""",
    re.VERBOSE | re.IGNORECASE,
)
# IBAN: country code, two check digits, then the BBAN in groups of four (or none).
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}\b")
# Lengths from the SWIFT IBAN registry; a country not listed is not an IBAN country.
_IBAN_LENGTHS = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BR=29, BY=28, CH=21, CR=22,
    CY=28, CZ=24, DE=22, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FO=18, FR=27, GB=22, GE=22,
    GI=23, GL=18, GR=27, GT=28, HR=21, HU=28, IE=22, IL=23, IQ=23, IS=26, IT=27, JO=30, KW=30,
    KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20, LV=21, LY=25, MC=27, MD=24, ME=22, MK=19, MR=27,
    MT=31, MU=30, NL=18, NO=15, PK=24, PL=28, PS=29, PT=25, QA=29, RO=24, RS=22, SA=24, SC=31,
    SE=24, SI=19, SK=24, SM=27, ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20,
)

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATE = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./-]\d{{1,2}}[./-](?:\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
)
# A date is a date of birth only when the text says so: an invoice date is not personal data.
_DOB = re.compile(
    rf"""\b(?:date\s+of\s+birth|birth\s?date|birthday|d\.?o\.?b\.?|born(?:\s+(?:on|in))?|
        geburtsdatum|geb\.|geboren(?:\s+am)?|date\s+de\s+naissance|n[ée]e?\s+le|
        fecha\s+de\s+nacimiento|nacid[oa](?:\s+el)?|data\s+di\s+nascita|nat[oa]\s+il)
    [\s:,)-]*(?:(?:is|was|on|the|:)\s+)*({_DATE})(?![\d.]\d)""",
    re.VERBOSE | re.IGNORECASE,
)
_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|"
    r"Close|Crescent|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir|Row|Gardens|Grove|Hill|Walk|"
    r"Loop|Trail|Mews|Plaza|Alley"
)
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|\#)"
_ADDRESS = re.compile(
    rf"""\b\d{{1,5}}[A-Za-z]?,?\s+
    (?:(?:[NSEW]\.?|North|South|East|West)\s+)?                   # direction
    (?:(?:[A-Z][a-z'’]+|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,3}}          # street name
    (?:{_STREET_SUFFIX})\b\.?
    (?:,?\s+{_UNIT}\.?\s*\#?[A-Za-z0-9-]+)?""",
    re.VERBOSE,
)
# Flat 3, Rose Court: a unit first, then a building or street name with a suffix.
_ADDRESS_UNIT_FIRST = re.compile(
    rf"\b{_UNIT}\.?\s*\d{{1,4}}[A-Za-z]?,\s+(?:\d{{1,5}}[A-Za-z]?\s+)?(?:[A-Z][a-z'’]+\s+){{1,3}}"
    rf"(?:{_STREET_SUFFIX}|House|Mansions|Building|Tower)\b"
)
# Hauptstraße 12, Lindenweg 4a: German-speaking countries write the number after the street.
_ADDRESS_NAME_FIRST = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*(?:straße|strasse|str\.|weg|gasse|allee|platz|ufer)"
    r"\s+\d{1,4}[a-z]?\b"
)
# 12 rue de Rivoli, Calle Mayor 5, Via Roma 10.
_ADDRESS_ROMANCE = re.compile(
    r"""\b(?:\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|cours)
         \s+(?:(?:de\s+la|de|du|des|la|le|l'|d')\s*)?[A-ZÉ][\w'’-]+(?:\s+[A-ZÉ][\w'’-]+)?
       |(?:Calle|Avenida|Avda\.|Paseo|Plaza|Via|Viale|Piazza|Corso|Rua|Carrer)
         \s+(?:(?:de\s+la|de|del|dei|della|di|do|da)\s+)?[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+)?,?\s+(?:n[º°o]\.?\s*)?\d{1,4})\b""",
    re.VERBOSE,
)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", re.IGNORECASE)

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
    for m in _PHONE.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        if not 7 <= len(digits) <= 15 or _in_equation(text, m.start(), m.end()):
            continue
        if _NOT_PHONE_SHAPE.fullmatch(value.lstrip("+")) or _DECIMAL.fullmatch(value):  # 04.0123450 is a fraction
            continue
        # 00 as the exit code only in a formatted number: 0010100903 is an identifier.
        international = value.startswith("+") or re.match(r"00[1-9]\d*[ \u00a0.-]", value) is not None
        formatted = bool(re.search(r"[ \u00a0./()-]", value))
        keyword = bool(_PHONE_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]))
        if international:
            ok = len(digits) >= 8 and _phone_valid(value, digits, international=True)
        elif not formatted:  # a bare number: a phone only when the text says so
            ok = keyword and (len(digits) == 10 or _phone_valid(value, digits, international=False))
        elif _NANP_SHAPE.fullmatch(value):  # (555) 123-4567, 555-123-4567, 1-800-555-0199
            ok = True
        elif re.search(r"(?<!\d)\d(?!\d)", value):  # a one-digit group: ISBN 0-306-40615-2, not a phone
            ok = False
        else:  # a national number starts with a trunk 0 (and has 9+ digits) unless the text says it is a phone
            trunk = digits.startswith("0") and len(digits) >= 9
            ok = (keyword or trunk) and _phone_valid(value, digits, international=False)
        if ok:
            spans.append(PiiSpan(m.start(), m.end(), "PHONE"))
    return spans


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length, then ISO 7064 mod 97-10 (letters as 10..35, the first
    four characters moved to the end) must leave 1."""
    iban = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _find_ibans(text: str) -> list[PiiSpan]:
    spans = []
    for m in _IBAN.finditer(text):
        value, length = m.group(), _IBAN_LENGTHS.get(m.group()[:2])
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


# Issuer prefixes (IIN ranges) and lengths of the card networks: (first, last, lengths).
_CARD_NETWORKS = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)), (2221, 2720, (16,)),  # Mastercard
    (34, 34, (15,)), (37, 37, (15,)),  # American Express
    (6011, 6011, range(16, 20)), (644, 649, range(16, 20)), (65, 65, range(16, 20)),  # Discover
    (3528, 3589, range(16, 20)),  # JCB
    (300, 305, (14, 16)), (36, 36, (14,)), (38, 39, (16,)),  # Diners Club
    (62, 62, range(16, 20)),  # UnionPay
    (50, 50, range(16, 20)), (56, 69, range(16, 20)),  # Maestro (the rare 12-15-digit ones are missed)
)


def card_number_valid(digits: str) -> bool:
    """A card network's prefix and length, and the Luhn checksum: a random 14-digit number (the
    product of two 7-digit numbers) passes Luhn one time in ten, but rarely all three."""
    network = any(
        int(digits[: len(str(first))]) in range(first, last + 1) and len(digits) in lengths
        for first, last, lengths in _CARD_NETWORKS
    )
    return network and luhn_valid(digits)


def _card_ok(value: str) -> bool:
    """A valid card number, grouped as cards are printed (4-4-4-4, Amex 4-6-5) or not grouped at
    all: a subtraction such as 3089432-2965625 is not a card number."""
    groups = re.split(r"[ -]", value)
    shapes = ([4] * (len(groups) - 1), [4, 6])
    if len(groups) > 1 and [len(g) for g in groups[:-1]] not in shapes:
        return False
    return card_number_valid("".join(groups))


_NUMERIC_KINDS = frozenset({"PHONE", "CARD", "IBAN", "GOV_ID", "DOB"})


def _uk_ni_ok(value: str) -> bool:
    return bool(_UK_NI_PREFIX.match(value[:2].upper()))


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
    ("IBAN", _find_ibans),
    ("CARD", _find_regex(_CARD, "CARD", _card_ok)),
    ("GOV_ID", _find_regex(_SSN, "GOV_ID")),
    ("GOV_ID", _find_regex(_UK_NI, "GOV_ID", _uk_ni_ok)),
    ("GOV_ID", _find_regex(_ID_AFTER_KEYWORD, "GOV_ID", lambda v: any(c.isdigit() for c in v), group=1)),
    ("DOB", _find_regex(_DOB, "DOB", group=1)),  # before PHONE: 01.09.1983 is a date
    ("ADDRESS", _find_regex(_ADDRESS_UNIT_FIRST, "ADDRESS")),
    ("ADDRESS", _find_regex(_ADDRESS, "ADDRESS")),
    ("ADDRESS", _find_regex(_ADDRESS_NAME_FIRST, "ADDRESS")),
    ("ADDRESS", _find_regex(_ADDRESS_ROMANCE, "ADDRESS")),
    ("ADDRESS", _find_regex(_PO_BOX, "ADDRESS")),
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
