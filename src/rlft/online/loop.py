"""The online loop: feedback on live answers -> a candidate -> the gate -> a hot swap.

A background thread polls the feedback store. Every ``online.every_judgements`` new judgements (or
``online.interval`` seconds with at least one), a round runs while the server keeps serving:

1. read every stored judgement; hold some out for the gate (a stable hash of the row id);
2. flag users whose labels on the shared model's answers disagree with everyone else's beyond
   chance and leave all their judgements out of the shared model's data
   (:mod:`rlft.online.poisoning`);
3. train a candidate from the served model with KTO or DPO (:mod:`rlft.online.train`);
4. gate it against the served model (:mod:`rlft.online.gate`); if it passes, save it as the next
   version and swap it into the server; if not, the served version stays;
5. train each qualifying user's adapter on the shared model and install it (personalisation).

Every round, promotion, rejection, failure, rollback and forgotten user goes into the audit log
with the hashes of the data it used. A round that crashes leaves the served version serving; it
is retried at the next poll (with backoff) and reported in the log, up to ``online.max_failures``
times in a row. All state is in ``output_dir`` (:mod:`rlft.online.versions`), so a restarted server
continues where it stopped.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rlft.common.hashing import folder_sha256
from rlft.config.online import OnlineRecipe
from rlft.feedback.live import LiveFeedback, LiveJudgement
from rlft.online.data import data_hash, dpo_pairs, kto_examples, load_probe, split
from rlft.online.gate import GateResult, run_gate
from rlft.online.personal import train_user_adapter
from rlft.online.poisoning import detect_poisoning
from rlft.online.train import TrainSettings, train_dpo, train_kto
from rlft.online.versions import OnlineState, VersionStore, adapter_key
from rlft.responsible.audit_log import AuditLog
from rlft.serving.host import ModelHost

log = logging.getLogger("rlft.online")


@dataclass
class RoundReport:
    round: int
    judgements: int
    outcome: str  # "promoted" | "rejected" | "skipped" (nothing to train the shared model on) | "failed"
    version: int  # the version served after the round
    gate: dict[str, Any] | None = None
    flagged: list[str] = field(default_factory=list)
    adapters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def pseudonymous(value: Any, names: set[str]) -> Any:
    """``value`` (JSON-ready) with every user name in ``names`` replaced by ``user-KEY`` (the hash
    that also names their adapter folder), as a dict key or a string in a list. The audit log
    cannot be edited and ``rounds.jsonl`` is not rewritten, so neither keeps a name that
    ``rlft privacy forget`` would have to remove."""
    if isinstance(value, dict):
        return {(f"user-{adapter_key(k)}" if k in names else k): pseudonymous(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [f"user-{adapter_key(v)}" if isinstance(v, str) and v in names else pseudonymous(v, names)
                for v in value]  # fmt: skip
    return value


class OnlineLoop:
    """Runs rounds against ``host`` from the judgements in ``live`` (see the module docstring)."""

    def __init__(self, recipe: OnlineRecipe, host: ModelHost, live: LiveFeedback, versions: VersionStore) -> None:
        self.recipe = recipe
        self.host = host
        self.live = live
        self.versions = versions
        self.audit = AuditLog(versions.root)
        self.state: OnlineState = versions.load_state()
        # The copy rounds train from, on the host's device (a round's candidate is a copy of it).
        self.served_model = versions.load_version(self.state.served_version).to(host.device)
        self.tokenizer = host.tokenizer
        self._lock = threading.Lock()  # one round, rollback or forget at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self._last_round_time = time.monotonic()

    # -- the thread -------------------------------------------------------------------------------

    def start(self) -> OnlineLoop:
        self._thread = threading.Thread(target=self._run, name="rlft-online", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)

    def _run(self) -> None:
        while not self._stop.wait(self.recipe.online.poll_seconds):
            try:
                self.poll()
            except Exception:  # the thread must outlive any fault; poll() reports its own
                log.exception("online loop: poll failed")

    def poll(self) -> RoundReport | None:
        """Apply a pending rollback, drop forgotten users' adapters, and run a round if one is due."""
        requested = self.versions.take_rollback_request()
        if requested is not None:
            self.rollback(requested)
        self._drop_forgotten_adapters()
        if not self.round_due():
            return None
        return self.run_round()

    def round_due(self) -> bool:
        cfg = self.recipe.online
        if self.state.consecutive_failures >= cfg.max_failures or time.monotonic() < self._next_retry:
            return False
        new = self.live.count() - self.state.judgements_at_last_round
        if new >= cfg.every_judgements:
            return True
        waited = time.monotonic() - self._last_round_time
        return cfg.interval is not None and new > 0 and waited >= cfg.interval

    # -- a round ----------------------------------------------------------------------------------

    def run_round(self) -> RoundReport:
        """One round now (whether due or not); a crash is recorded, never raised."""
        with self._lock:
            number = self.state.rounds + 1
            try:
                report = self._round(number)
                self.state.consecutive_failures = 0
            except Exception as exc:
                self.state.consecutive_failures += 1
                self._next_retry = time.monotonic() + self.recipe.online.poll_seconds * 2**self.state.consecutive_failures
                report = RoundReport(number, 0, "failed", self.state.served_version, error=f"{type(exc).__name__}: {exc}")
                self.audit.append("online_round_failed", round=number, error=report.error,
                                  served_version=self.state.served_version,
                                  consecutive_failures=self.state.consecutive_failures)  # fmt: skip
                log.warning("online round %d failed (the served version stays): %s", number, report.error)
            self.state.rounds = number if report.outcome != "failed" else self.state.rounds
            self._last_round_time = time.monotonic()
            self.versions.save_state(self.state)
            names = set(report.adapters) | set(report.flagged)
            self.versions.append_round(pseudonymous({"time": time.time(), **asdict(report)}, names))
            return report

    def _round(self, number: int) -> RoundReport:
        cfg = self.recipe.online
        judgements = self.live.judgements()
        count = self.live.count()
        if not judgements:
            raise RuntimeError("no judgements stored yet")
        train, held = split(judgements, cfg.heldout_fraction)
        flagged = self._flag_poisoners(judgements)
        shared_train = [j for j in train if j.user not in flagged]
        shared_held = [j for j in held if j.user not in flagged]
        hashes = {"train_sha256": data_hash(shared_train), "heldout_sha256": data_hash(shared_held)}
        self.audit.append("online_round_start", round=number, served_version=self.state.served_version,
                          train_judgements=len(shared_train), heldout_judgements=len(shared_held),
                          flagged_users=len(flagged), **hashes)  # fmt: skip
        missing = self._nothing_to_train(shared_train)
        gate_json: dict[str, Any] | None = None
        if missing is not None:  # no shared candidate this round; adapters still learn
            outcome = "skipped"
            self.audit.append("online_round_skipped", round=number, reason=missing,
                              served_version=self.state.served_version, **hashes)  # fmt: skip
            log.info("online round %d: no shared candidate: %s", number, missing)
        else:
            candidate, gate = self._train_and_gate(shared_train, shared_held, number)
            outcome, gate_json = ("promoted" if gate.passed else "rejected"), gate.to_json()
            if gate.passed:
                self._promote(candidate, number, gate, hashes)
            else:
                self.audit.append("online_candidate_rejected", round=number, reasons=gate.reasons,
                                  served_version=self.state.served_version, gate=gate_json, **hashes)  # fmt: skip
        adapters = self._personalise(judgements, number)
        self.state.last_judgement_id = max(j.id for j in judgements)
        self.state.judgements_at_last_round = count
        return RoundReport(number, len(judgements), outcome, self.state.served_version, gate_json,
                           sorted(flagged), adapters)  # fmt: skip

    def _nothing_to_train(self, train: list[LiveJudgement]) -> str | None:
        """Why the shared model has nothing to learn from ``train``, or None."""
        if self.recipe.online.method == "dpo" and not dpo_pairs(train):
            return "online.method is dpo and no pairwise judgement is in the shared training data"
        if not kto_examples(train):
            return "no judgement is in the shared training data (all held out or flagged)"
        return None

    def _settings(self, steps: int, learning_rate: float, seed: int) -> TrainSettings:
        cfg = self.recipe.online
        return TrainSettings(steps, cfg.batch_size, learning_rate, cfg.beta, seed,
                             cfg.desirable_weight, cfg.undesirable_weight, cfg.dropout)  # fmt: skip

    def _train_and_gate(
        self, train: list[LiveJudgement], held: list[LiveJudgement], number: int
    ) -> tuple[Any, GateResult]:
        cfg = self.recipe.online
        settings = self._settings(cfg.steps, cfg.learning_rate, cfg.seed + number)
        candidate = copy.deepcopy(self.served_model)
        if cfg.method == "dpo":
            train_dpo(candidate, self.served_model, self.tokenizer, dpo_pairs(train), settings)
        else:
            train_kto(candidate, self.served_model, self.tokenizer, kto_examples(train), settings)
        probe = load_probe(cfg.probe) if cfg.probe else None  # read each round: it may be edited
        gate = run_gate(candidate, self.served_model, self.tokenizer, held, probe,
                        cfg.min_heldout_accuracy, cfg.max_regression)  # fmt: skip
        return candidate, gate

    def _flag_poisoners(self, judgements: list[LiveJudgement]) -> set[str]:
        cfg = self.recipe.poisoning
        if not cfg.enabled:
            return set()
        # Only votes on the shared model's answers: every user judged the same model, so their
        # labels are comparable. Answers from a user's own adapter follow that user's taste, and
        # the other users' preference models would be judging answers unlike any they voted on.
        shared_answers = [j for j in judgements if not j.personal]
        report = detect_poisoning(shared_answers, min_votes=cfg.min_votes, alpha=cfg.alpha)
        if report.flagged:
            names = set(report.votes)
            self.audit.append("online_users_flagged", users=pseudonymous(list(report.flagged), names),
                              report=pseudonymous(report.to_json(), names))  # fmt: skip
            log.warning("online: excluded from the shared model's data: %s", ", ".join(report.flagged))
        return set(report.flagged)

    def _promote(self, candidate: Any, number: int, gate: GateResult, hashes: dict[str, str]) -> None:
        version = self.state.latest_version + 1
        folder = self.versions.save_version(version, candidate, self.tokenizer)
        self.host.swap(version, candidate.state_dict())
        parent = self.state.served_version
        self.served_model = candidate
        self.state.latest_version = self.state.served_version = version
        self.state.history.append({"event": "promoted", "version": version, "parent": parent, "round": number,
                                   "time": time.time()})  # fmt: skip
        self.audit.append("online_candidate_promoted", round=number, version=version, parent_version=parent,
                          version_sha256=folder_sha256(folder), gate=gate.to_json(), **hashes)  # fmt: skip
        log.info("online round %d: version %d promoted", number, version)

    def _personalise(self, judgements: list[LiveJudgement], number: int) -> dict[str, Any]:
        cfg = self.recipe.personalization
        if cfg.method != "adapter":
            return {}
        by_user: dict[str, list[LiveJudgement]] = {}
        for j in judgements:
            by_user.setdefault(j.user, []).append(j)
        out = {}
        for user, own in sorted(by_user.items()):
            if len(own) < cfg.min_judgements:
                continue
            settings = self._settings(cfg.steps, cfg.learning_rate, self.recipe.online.seed + number)
            result = train_user_adapter(self.served_model, self.tokenizer, user, own, cfg.r,
                                        self.recipe.online.heldout_fraction, settings)  # fmt: skip
            meta = {"base_version": self.state.served_version, "round": number, "judgements": len(own),
                    "heldout_accuracy": result.heldout_accuracy, "data_sha256": data_hash(own)}  # fmt: skip
            if result.passed:
                self.versions.save_adapter(user, result.lora_state, meta)
                self.host.set_adapter(user, result.lora_state)
            self.audit.append("online_adapter_trained" if result.passed else "online_adapter_rejected",
                              user_key=self.versions.adapter_folder(user).name, **meta)  # fmt: skip
            out[user] = {"installed": result.passed, **meta}
        return out

    # -- rollback and forget -----------------------------------------------------------------------

    def rollback(self, version: int) -> None:
        """Serve ``version`` again (a version kept in ``output_dir/versions``)."""
        with self._lock:
            model = self.versions.load_version(version).to(self.host.device)
            self.host.swap(version, model.state_dict())
            previous = self.state.served_version
            self.served_model = model
            self.state.served_version = version
            self.state.history.append({"event": "rollback", "version": version, "from": previous, "time": time.time()})
            self.versions.save_state(self.state)
            self.audit.append("online_rollback", version=version, from_version=previous,
                              version_sha256=folder_sha256(self.versions.version_folder(version)))  # fmt: skip
            log.info("online: rolled back from version %d to %d", previous, version)

    def _drop_forgotten_adapters(self) -> None:
        for user in self.host.adapters():
            if not self.versions.adapter_folder(user).exists():
                self.host.set_adapter(user, None)
