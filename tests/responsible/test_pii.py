"""PII scrubber: per-type precision and recall on the labelled set, placeholders, the CLI.

    python tests/responsible/test_pii.py     # prints the tables quoted in docs/responsible.md
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from rlft.responsible import pii
from rlft.responsible.pii import (
    PiiScrubber,
    card_number_valid,
    iban_valid,
    luhn_valid,
    ner_available,
)
from rlft.tasks import ArithmeticTask

LABELLED = Path(__file__).parents[1] / "data" / "pii_labelled.jsonl"
STRUCTURED = ("EMAIL", "PHONE", "CARD", "IP")


def _load() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text().splitlines()]


def _overlaps(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    """Same type and intersection over union >= 0.5."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return a[2] == b[2] and inter / union >= 0.5


def precision_recall(records: list[dict], scrubber: PiiScrubber) -> dict[str, dict[str, float]]:
    tp_gold, tp_pred, n_gold, n_pred = Counter(), Counter(), Counter(), Counter()
    for record in records:
        gold = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
        pred = [(s.start, s.end, s.type) for s in scrubber.find(record["text"])]
        for g in gold:
            n_gold[g[2]] += 1
            tp_gold[g[2]] += any(_overlaps(g, p) for p in pred)
        for p in pred:
            n_pred[p[2]] += 1
            tp_pred[p[2]] += any(_overlaps(g, p) for g in gold)
    return {
        kind: {
            "precision": tp_pred[kind] / n_pred[kind] if n_pred[kind] else float("nan"),
            "recall": tp_gold[kind] / n_gold[kind] if n_gold[kind] else float("nan"),
            "support": n_gold[kind],
        }
        for kind in sorted(set(n_gold) | set(n_pred))
    }


def test_labelled_set_is_sizeable_and_consistent():
    records = _load()
    assert len(records) >= 300
    kinds = Counter(s["type"] for r in records for s in r["spans"])
    for kind in (*STRUCTURED, "GOV_ID", "ADDRESS"):
        assert kinds[kind] >= 50, kinds
    assert sum(not r["spans"] for r in records) >= 50  # lines without PII measure precision
    for r in records:
        for s in r["spans"]:
            assert 0 <= s["start"] < s["end"] <= len(r["text"])


def test_precision_and_recall_per_type():
    scores = precision_recall(_load(), PiiScrubber())
    print(json.dumps(scores, indent=1))  # shown with -s; the figures are quoted in docs/responsible.md
    for kind in STRUCTURED:
        assert scores[kind]["recall"] >= 0.95, (kind, scores[kind])
        assert scores[kind]["precision"] >= 0.9, (kind, scores[kind])
    for kind in ("GOV_ID", "ADDRESS", "IBAN", "DOB"):
        assert scores[kind]["recall"] >= 0.8, (kind, scores[kind])
        assert scores[kind]["precision"] >= 0.8, (kind, scores[kind])
    if ner_available():
        assert scores["PERSON"]["recall"] >= 0.5


# Floors on the hand-written hard set (issue 13, item 21), measured before the fix at: IBAN 0/7,
# DOB 0/6, EMAIL 4/9, PHONE 9/16 (precision 0.64), GOV_ID 0/4, ADDRESS 2/9. Precision must stay 1.0:
# the hard negatives (arithmetic, bare numbers, dates that are not birthdays) hold no PII.
HARD_RECALL_FLOORS = {"IBAN": 1.0, "DOB": 1.0, "EMAIL": 0.85, "PHONE": 0.9, "GOV_ID": 0.75, "ADDRESS": 0.75}


def test_hard_cases_recall_per_type_and_no_false_positive():
    hard = [r for r in _load() if r.get("hard")]
    scores = precision_recall(hard, PiiScrubber(ner=False))
    for kind, floor in HARD_RECALL_FLOORS.items():
        assert scores[kind]["recall"] >= floor, (kind, scores[kind])
        assert scores[kind]["precision"] == 1.0, (kind, scores[kind])
    negatives = [r["text"] for r in hard if not r["spans"]]
    assert len(negatives) >= 10
    assert {text: PiiScrubber().find(text) for text in negatives} == {text: [] for text in negatives}


def test_arithmetic_is_never_pii():
    """Prompts, answers and solved problems of every size and operation: no phone, card or ID. A
    bare number is not a phone number (5-digit products are 10 digits long)."""
    scrubber = PiiScrubber(ner=False)
    found = []
    for digits in range(1, 8):
        for ops in (["+"], ["-"], ["*"]):
            task = ArithmeticTask(digits=digits, operations=ops, eval_size=min(64, 10 ** (2 * digits) // 4))
            for p in task.eval_problems + task.train_problems(150, torch.Generator().manual_seed(digits)):
                for text in (p.prompt, p.prompt + p.target, f"What is {p.prompt[:-1]}?"):
                    found += [(text, s) for s in scrubber.find(text)]
                found += [(p.answer, s) for s in scrubber.find(p.answer) if s.type == "PHONE"]
    steps = ArithmeticTask(digits=5, answer_format="steps", eval_size=64)
    found += [(p.target, s) for p in steps.eval_problems for s in scrubber.find(p.prompt + p.target)]
    assert found == []
    assert PiiScrubber().scrub("99999*99999=9999800001").text == "99999*99999=9999800001"
    assert PiiScrubber().scrub("9999800001").text == "9999800001"
    assert PiiScrubber().scrub("call 9999800001").text == "call [PHONE]"  # the text says it is one


def test_phones_without_the_phonenumbers_package_fall_back_to_digit_counts(monkeypatch):
    """``phonenumbers`` is in the responsible extra; a core install still scrubs phones, by format."""
    monkeypatch.setattr(pii, "_phonenumbers", lambda: None)
    assert pii.phone_backend() == "regex"
    hard = [r for r in _load() if r.get("hard")]
    scores = precision_recall(hard, PiiScrubber(ner=False))
    assert scores["PHONE"]["recall"] >= 0.9 and scores["PHONE"]["precision"] == 1.0, scores["PHONE"]
    assert PiiScrubber().scrub("12345*678=8345910, Tel. 030 12345678").text == "12345*678=8345910, Tel. [PHONE]"


def test_iban_and_card_checks_hand_values():
    assert iban_valid("GB29 NWBK 6016 1331 9268 19") and iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")  # check digits fail
    assert not iban_valid("DE8937040044053201300")  # one character short for Germany
    assert not iban_valid("XX89370400440532013000")  # not an IBAN country
    assert card_number_valid("4111111111111111") and card_number_valid("378282246310005")
    assert not card_number_valid("79927398713")  # Luhn-valid, but no network issues 11 digits
    assert not card_number_valid("9557265477760")  # Luhn-valid 13 digits, no network starts with 9


def test_luhn_hand_values():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")  # the textbook example
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111111111111112")


def test_scrub_replaces_with_typed_placeholders_and_counts():
    text = "Mail ann.lee@example.com or call (555) 123-4567; card 4111 1111 1111 1111 from 192.0.2.7."
    result = PiiScrubber().scrub(text)
    assert result.text == "Mail [EMAIL] or call [PHONE]; card [CARD] from [IP]."
    assert result.counts == Counter({"EMAIL": 1, "PHONE": 1, "CARD": 1, "IP": 1})


def test_luhn_invalid_card_and_ordinary_numbers_are_kept():
    text = "Order 4111 1111 1111 1112 shipped 2024-03-15 at 10:30, total $1,234.56, v1.2.3"
    assert PiiScrubber().scrub(text).text == text


def test_scrubbed_record_never_contains_an_original_value():
    records = _load()
    scrubber = PiiScrubber(types=[t for t in ("EMAIL", "PHONE", "CARD", "IP", "GOV_ID")])
    counts: Counter[str] = Counter()
    scrubbed = scrubber.scrub_record({"rows": [r["text"] for r in records], "n": 3}, counts)
    blob = json.dumps(scrubbed, ensure_ascii=False)
    left = [
        r["text"][s["start"] : s["end"]]
        for r in records
        for s in r["spans"]
        if s["type"] in scrubber.types and r["text"][s["start"] : s["end"]] in blob
    ]
    # By design a bare run of digits is a phone number only after a phone word ("call ..."):
    # "Or 2545552372, the office line" keeps its number.
    assert all(value.isdigit() for value in left) and len(left) <= 2, left
    assert scrubbed["n"] == 3 and sum(counts.values()) > 300


def test_types_can_be_restricted_and_unknown_types_are_refused():
    text = "a@b.example 192.0.2.1"
    assert PiiScrubber(types=["IP"]).scrub(text).text == "a@b.example [IP]"
    with pytest.raises(ValueError, match="EMAILS"):
        PiiScrubber(types=["EMAILS"])


def _rlft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True, timeout=60)


def test_cli_scan_reports_counts_and_lines_but_no_values(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        json.dumps({"prompt": "hello"}) + "\n"
        + json.dumps({"prompt": "mail zed@example.org", "meta": {"ip": "203.0.113.9"}}) + "\n"
        + json.dumps({"prompt": "card 4111-1111-1111-1111"}) + "\n"
    )
    out = _rlft("privacy", "scan", str(data), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["counts"] == {"CARD": 1, "EMAIL": 1, "IP": 1}
    assert result["line_numbers"] == {"EMAIL": [2], "IP": [2], "CARD": [3]}
    text_out = _rlft("privacy", "scan", str(data))
    for value in ("zed@example.org", "203.0.113.9", "4111-1111-1111-1111"):
        assert value not in out.stdout + text_out.stdout
    assert "EMAIL" in text_out.stdout
    assert "zed@example.org" in _rlft("privacy", "scan", str(data), "--show-values").stdout
    assert _rlft("privacy", "scan", str(data), "--fail-on-pii").returncode == 1


def test_cli_scrub_writes_a_copy_without_the_values(tmp_path):
    data = tmp_path / "notes.txt"
    data.write_text("call +44 20 7946 0958\nnothing here\n")
    out = _rlft("privacy", "scrub", str(data), "-o", str(tmp_path / "clean.txt"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "clean.txt").read_text() == "call [PHONE]\nnothing here\n"


def test_cli_malformed_jsonl_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"a": 1}\n{"a": \n')
    out = _rlft("privacy", "scan", str(data))
    assert out.returncode == 2
    assert "bad.jsonl, line 2" in out.stderr and "Traceback" not in out.stderr


def _table(records: list[dict]) -> str:
    scores = precision_recall(records, PiiScrubber())
    rows = ["| type | precision | recall | labelled spans |", "|---|---|---|---|"]
    for kind in pii.PII_TYPES:
        if kind not in scores:
            continue
        score = scores[kind]
        precision = "–" if score["precision"] != score["precision"] else f"{score['precision']:.2f}"
        rows.append(f"| {kind} | {precision} | {score['recall']:.2f} | {score['support']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    records = _load()
    print(f"phone backend: {pii.phone_backend()}; NER: {ner_available()}\n")
    print(f"All {len(records)} lines:\n\n{_table(records)}\n")
    hard = [r for r in records if r.get("hard")]
    print(f"Hard set, {len(hard)} lines:\n\n{_table(hard)}")
