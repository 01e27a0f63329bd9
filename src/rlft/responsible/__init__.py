"""Responsible training: PII scrubbing, a tamper-evident audit log, bias audits, model cards and
run reports. Each module imports its heavy dependencies (torch, matplotlib, vaderSentiment) lazily."""
