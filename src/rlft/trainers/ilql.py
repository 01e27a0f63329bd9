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

Data: JSONL, one episode per line: ``{"segments": [obs, action, obs, ...], "rewards": [one per
agent turn], "success": bool}`` (``write_episodes`` writes it from played episodes).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Sequence
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
from rlft.errors import RlftError
from rlft.rollout.multiturn import Episode, MultiTurnRollout, encode_demonstration
from rlft.models.tokens import positions_from_mask
from rlft.config.agent import ILQLConfig
from rlft.common.optim import adamw


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


def write_episodes(path: str | Path, episodes: Sequence[Episode]) -> None:
    with open(path, "w") as f:
        for e in episodes:
            f.write(json.dumps({"segments": e.segments, "rewards": e.rewards, "success": e.success}) + "\n")


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Logged episodes, with an error naming the file and line of a malformed record."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            segments, rewards = rec["segments"], [float(r) for r in rec["rewards"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RlftError(f"{path}:{n}: not an episode record ({exc}); expected "
                            '{"segments": [...], "rewards": [...]}') from None
        if len(rewards) != len(segments) // 2:
            raise RlftError(f"{path}:{n}: {len(segments) // 2} agent turns but {len(rewards)} rewards")
        records.append({"segments": segments, "rewards": rewards})
    if not records:
        raise RlftError(f"{path} holds no episodes.")
    return records


def episodes_to_rollout(tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]]) -> MultiTurnRollout:
    """Logged episodes as a :class:`MultiTurnRollout` (tokenised as the rollout would have been),
    each turn's reward on the EOS that ends it."""
    rows = []
    for rec in records:
        segs = rec["segments"]
        prompt, _ = encode_demonstration(tokenizer, segs[:1])
        ids, agent = encode_demonstration(tokenizer, segs)
        ids, agent = ids[len(prompt):], agent[len(prompt):]
        rewards, turn, k, turns = [0.0] * len(ids), [-1] * len(ids), -1, rec["rewards"]
        for t, a in enumerate(agent):
            if a and (t == 0 or not agent[t - 1]):
                k += 1
            if a:
                turn[t] = k
                if t + 1 == len(agent) or not agent[t + 1]:
                    rewards[t] = turns[k] if k < len(turns) else 0.0
        rows.append((prompt, ids, agent, rewards, turn))
    P = max(len(r[0]) for r in rows)
    T = max(1, max(len(r[1]) for r in rows))
    pad = tokenizer.pad_token_id
    out = MultiTurnRollout(
        torch.full((len(rows), P), pad), torch.zeros(len(rows), P, dtype=torch.long),
        torch.full((len(rows), T), pad), torch.zeros(len(rows), T), torch.zeros(len(rows), T),
        torch.zeros(len(rows), T), torch.zeros(len(rows), T), torch.full((len(rows), T), -1),
    )
    for i, (prompt, ids, agent, rewards, turn) in enumerate(rows):
        out.prompt_ids[i, P - len(prompt):] = torch.tensor(prompt)
        out.prompt_mask[i, P - len(prompt):] = 1
        n = len(ids)
        out.completion_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        out.completion_mask[i, :n] = torch.tensor(agent, dtype=torch.float32)
        out.completion_attention[i, :n] = 1.0
        out.token_rewards[i, :n] = torch.tensor(rewards)
        out.turn_index[i, :n] = torch.tensor(turn)
    return out


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


def train_ilql(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]],
    cfg: ILQLConfig, seed: int = 0, on_step: Any = None,
) -> ILQLHeads:
    """Train ``model`` and new heads in place on the logged episodes; returns the heads."""
    data = episodes_to_rollout(tokenizer, records)
    heads = ILQLHeads(model.config.hidden_size, model.config.vocab_size)
    params = [p for p in list(model.parameters()) + list(heads.parameters()) if p.requires_grad]
    optimizer = adamw(params, cfg.learning_rate)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        for rows in torch.randperm(len(data), generator=gen).split(cfg.batch_size):
            loss, stats = ilql_loss(model, heads, data.select(rows), cfg)
            if not torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            heads.update_target(cfg.polyak_alpha)
            step += 1
            if on_step:
                on_step({"step": step, "epoch": epoch + 1, "loss/total": loss.item(), **stats})
    model.eval()
    return heads


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
