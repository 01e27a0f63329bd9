"""Offline ILQL (Snell et al., 2022) on logged multi-turn episodes.

Q and V heads sit on the language model's last hidden state: Q(s_t, .) has one output per token
of the vocabulary, V(s_t) one scalar; a target copy of the Q head follows it by Polyak averaging.
The trunk, the LM head and both heads are trained together on the logged episodes with

    L = L_Q (TD)  +  L_V (expectile)  +  cql_weight * L_CQL  +  L_AWAC (weighted NLL)

(rlft.algorithms.q_learning), over the agent's tokens only. The policy that acts is the LM with
its logits perturbed by decode_beta * (Q_hat - V) (:class:`ILQLPolicy`).

Differences from the paper: one Q head and its target rather than two (the paper takes the
minimum of two to curb over-estimation; the CQL term already does most of that work on a
vocabulary this small); the heads are linear, zero-initialised, so an untrained ILQL policy
decodes exactly like the base; the LM term is AWAC-weighted (the paper's released code keeps the
weight at 1 by default, which is ``awac_beta: 0`` here).

Data: logged episodes (``rlft.rollout.episodes``: JSONL, one episode per line), from ``ilql.data``
or, when it is empty, ``episodes`` episodes of the warm-started base, logged when the run starts
into ``RUN/logged_episodes.jsonl`` (a resumed run reads them back from there). One harness step
(:class:`ILQLTrainer`) is one optimiser step on ``ilql.batch_size`` episodes; each of the
``ilql.epochs`` passes draws a new order from the checkpointed generator.
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.aggregation import masked_mean
from rlft.algorithms.logprobs import selective_log_softmax
from rlft.algorithms.q_learning import (
    awac_lm_loss,
    awac_weights,
    cql_loss,
    expectile_loss,
    ilql_logits,
    next_counted_values,
    polyak,
    q_td_loss,
)
from rlft.common.hashing import file_sha256
from rlft.common.optim import adamw
from rlft.common.run_folder import RunFolder
from rlft.config.agent import AgentConfig, ILQLConfig
from rlft.models.tokens import positions_from_mask
from rlft.rollout.episodes import episodes_to_rollout, read_episodes, write_episodes
from rlft.rollout.multiturn import MultiTurnRollout
from rlft.trainers.agent import AgentTrainer, play
from rlft.trainers.run import RunSession


class ILQLHeads(nn.Module):
    """Q (vocabulary-sized), V (scalar) and the target Q head, on hidden states (B, T, H)."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.q = nn.Linear(hidden_size, vocab_size)
        self.v = nn.Linear(hidden_size, 1)
        for layer in (self.q, self.v):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)

    @torch.no_grad()
    def update_target(self, alpha: float) -> None:
        for t, o in zip(self.target_q.parameters(), self.q.parameters(), strict=True):
            t.copy_(polyak(t, o, alpha))


def ilql_loss(
    model: PreTrainedModel, heads: ILQLHeads, batch: MultiTurnRollout, cfg: ILQLConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The ILQL loss of a batch of logged episodes, over the agent's tokens."""
    mask = batch.completion_mask
    attention = batch.attention_mask
    P = batch.prompt_ids.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=attention, position_ids=positions_from_mask(attention),
                use_cache=False, output_hidden_states=True)
    hidden = out.hidden_states[-1][:, P - 1 : -1].float()  # (B, T, H): the state before each token
    logits = out.logits[:, P - 1 : -1].float()  # (B, T, V)
    actions = batch.completion_ids
    q_logits = heads.q(hidden)  # (B, T, V)
    q_taken = q_logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    values = heads.v(hidden).squeeze(-1)  # (B, T)
    with torch.no_grad():
        q_hat = heads.target_q(hidden).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    next_v = next_counted_values(values.detach(), mask)
    l_q = masked_mean(q_td_loss(q_taken, batch.token_rewards, next_v, cfg.gamma), mask)
    l_v = masked_mean(expectile_loss(values, q_hat, cfg.tau), mask)
    l_cql = masked_mean(cql_loss(q_logits, actions), mask)
    logprobs = selective_log_softmax(logits, actions)
    weights = awac_weights(q_hat, values, cfg.awac_beta, cfg.awac_max_weight)
    l_lm = masked_mean(awac_lm_loss(logprobs, weights), mask)
    loss = l_q + l_v + cfg.cql_weight * l_cql + l_lm
    stats = {"loss/q": l_q.item(), "loss/v": l_v.item(), "loss/cql": l_cql.item(), "loss/awac_lm": l_lm.item(),
             "ilql/awac_weight": masked_mean(weights, mask).item(), "ilql/v_mean": masked_mean(values.detach(), mask).item()}
    return loss, stats


class ILQLPolicy(nn.Module):
    """The LM with ILQL's decoding: logits + beta * (Q_hat(s, .) - V(s)). Usable wherever
    :func:`rlft.rollout.sampling.sample` takes a model (it keeps the KV cache)."""

    def __init__(self, model: PreTrainedModel, heads: ILQLHeads, beta: float) -> None:
        super().__init__()
        self.model, self.heads, self.beta = model, heads, beta
        params = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in params else "past_key_values"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                use_cache: bool = True, cache: Any = None) -> SimpleNamespace:
        extra = {self._cache_name: cache} if cache is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, output_hidden_states=True, **extra)
        hidden = out.hidden_states[-1].float()
        logits = ilql_logits(out.logits.float(), self.heads.target_q(hidden), self.heads.v(hidden).squeeze(-1), self.beta)
        new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return SimpleNamespace(logits=logits, cache=new_cache, past_key_values=new_cache)


LOGGED_EPISODES = "logged_episodes.jsonl"


def logged_episodes(
    config: AgentConfig, session: RunSession, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
    family: Any,
) -> list[dict[str, Any]]:
    """ILQL's data: ``ilql.data``, else ``episodes`` episodes of the warm-started base, logged once
    into ``RUN/logged_episodes.jsonl`` when the run starts (a resumed run reads them back). The
    file's hash goes to the audit log."""
    path = Path(config.ilql.data) if config.ilql.data else session.run.root / LOGGED_EPISODES
    if not path.exists() and not config.ilql.data:
        envs = [copy.deepcopy(e) for e in family.train_envs(config.episodes, torch.Generator().manual_seed(config.seed))]
        _, logged = play(policy, tokenizer, envs, config, torch.Generator().manual_seed(config.seed + 1))
        write_episodes(path, [e for e in logged if e.error is None])
    records = read_episodes(path)
    session.audit.append("data", path=str(path), sha256=file_sha256(path), episodes=len(records))
    return records


class ILQLTrainer(AgentTrainer):
    """Offline ILQL (``algorithm: ilql``) for the run harness: one step is one optimiser step on
    a batch of logged episodes; an iteration (``eval_every``) is one pass over them."""

    resumable_changes = frozenset({"device"})  # the data and ilql.epochs fix the steps

    @staticmethod
    def planned_steps(config: AgentConfig) -> int | None:
        return None  # known once the logged episodes are read

    def __init__(self, config: AgentConfig, session: RunSession, progress: bool = True) -> None:
        super().__init__(config, session, progress)
        cfg = config.ilql
        records = logged_episodes(config, session, self.policy, self.tokenizer, self.family)
        self.data = episodes_to_rollout(self.tokenizer, records).to(self.device)
        self.heads = ILQLHeads(self.policy.config.hidden_size, self.policy.config.vocab_size).to(self.device)
        self.acting = ILQLPolicy(self.policy, self.heads, cfg.decode_beta)
        self.params = [p for p in list(self.policy.parameters()) + list(self.heads.parameters()) if p.requires_grad]
        self.optimizer = adamw(self.params, cfg.learning_rate)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.batches: list[torch.Tensor] = []  # the rows of each batch of the current epoch
        self.per_epoch = -(-len(self.data) // cfg.batch_size)
        self.schedule = self.make_schedule(cfg.epochs * self.per_epoch, self.per_epoch)

    def acting_policy(self) -> torch.nn.Module:
        return self.acting

    def modules(self) -> torch.nn.Module:
        return nn.ModuleDict({"policy": self.policy, "heads": self.heads})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        self.batches = list(state["batches"])

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        cfg = self.config.ilql
        epoch, index = divmod(step, self.per_epoch)
        if index == 0:
            self.batches = list(torch.randperm(len(self.data), generator=self.gen).split(cfg.batch_size))
        self.policy.train()
        loss, stats = ilql_loss(self.policy, self.heads, self.data.select(self.batches[index]), cfg)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return {}, False
        loss.backward()
        if not math.isfinite(float(torch.nn.utils.clip_grad_norm_(self.params, 1.0))):
            self.optimizer.zero_grad(set_to_none=True)
            return {}, False
        self.optimizer.step()
        self.heads.update_target(cfg.polyak_alpha)
        return {"epoch": epoch + 1, "loss/total": loss.item(), **stats}, True

    def save_final(self, run: RunFolder) -> Path:
        """The LM in ``final_model/`` and the heads in ``ilql_heads.pt`` (the acting policy needs both)."""
        heads = run.root / "ilql_heads.pt"
        torch.save(self.heads.state_dict(), heads.with_suffix(".tmp"))
        heads.with_suffix(".tmp").replace(heads)
        return super().save_final(run)

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {**super().summary(base, final), "logged_episodes": len(self.data)}
