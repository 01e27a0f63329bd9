"""The whole RLHF loop on a laptop: warm start, human(-like) preferences over HTTP, a reward model,
PPO against it under a KL leash, and the hidden truth before and after.

    python examples/rlhf/run.py --out runs/rlhf            # about 5 minutes on 2 CPU cores

1. **Warm start**: the tiny model learns to write two-clause reviews ("Review of the pizza at the
   station:" -> " great food , rude staff .") of every tone (``policy.yaml``, the ``reviews``
   task; ``train.steps=0`` so only the warm start runs).
2. **Items**: for training prompts, two completions sampled from the warm-started policy.
3. **Preferences**: a scripted annotator with a *hidden* preference signs in to the real feedback
   web app (``BackgroundServer`` on 127.0.0.1, ``httpx``), asks for the next item and submits A, B
   or tie, exactly as the browser page does. Its hidden utility is
   ``rlft.tasks.reviews.true_score``: the mean tone of the two adjectives (+1 positive, 0 neutral,
   -1 negative), and -1 for anything that is not a well-formed review with two different aspects.
   It never reveals the numbers, only the choice.
4. **Export** the pairs (``rlft feedback export``) and **train a reward model** on them
   (``rlft rm train`` machinery, ``reward_model.yaml``), starting from the policy's body.
5. **PPO** (``policy.yaml``: value head, GAE, KL penalty in the reward) with
   ``reward: {type: reward_model}`` — the policy never sees the true score.
6. **Report** the reward model's score and the hidden true score of the policy's sampled reviews
   (4 per held-out prompt, seeded), before and after PPO. Reward hacking shows up as the first rising while the
   second falls.

The last line printed is one JSON object (``benchmarks/rlhf_loop.py`` relies on it).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import yaml

HERE = Path(__file__).parent


def hidden_choice(first: str, second: str) -> str:
    """'first', 'second' or 'tie' by the annotator's hidden utility (``rlft.tasks.reviews.true_score``)."""
    from rlft.tasks.reviews import true_score

    u1, u2 = true_score(first), true_score(second)
    return "tie" if u1 == u2 else ("first" if u1 > u2 else "second")


def sample_items(model_dir: Path, problems: list[Any], seed: int, max_new_tokens: int) -> list[Any]:
    """Two sampled completions per prompt from the policy; prompts whose two are equal are dropped."""
    from rlft.feedback.store import Item, item_id_for
    from rlft.models.loading import load_policy
    from rlft.models.tokens import decode_completions, encode_prompts
    from rlft.rollout.sampling import sample

    model, tokenizer = load_policy(str(model_dir))
    model.eval()
    prompts = [p.prompt for p in problems for _ in range(2)]
    ids, mask = encode_prompts(tokenizer, prompts)
    rollout = sample(model, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=max_new_tokens, temperature=1.0, generator=torch.Generator().manual_seed(seed))
    texts = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    items = []
    for p, a, b in zip(prompts[::2], texts[::2], texts[1::2], strict=True):
        if a.strip() and b.strip() and a != b:
            items.append(Item(item_id_for(p, a, b), p, a, b, source="policy samples"))
    return items


def scripted_annotator(server_url: str, token: str) -> dict[str, int]:
    """Judge every item the server hands out, over HTTP, by the hidden preference."""
    import httpx

    counts = {"A": 0, "B": 0, "tie": 0, "duplicates": 0}
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        while True:
            response = http.get("/api/next", params={"kind": "pair"})
            if response.status_code == 204:
                return counts
            response.raise_for_status()
            item = response.json()
            shown = item["options"]  # in display order; each option names its side
            verdict = hidden_choice(shown[0]["text"], shown[1]["text"])
            choice = "tie" if verdict == "tie" else shown[0 if verdict == "first" else 1]["side"]
            body = {"item_id": item["item_id"], "kind": "pair", "choice": choice,
                    "idempotency_key": f"scripted-{uuid.uuid4().hex}"}
            posted = http.post("/api/judgements", json=body)
            posted.raise_for_status()
            counts["duplicates" if posted.json().get("duplicate") else choice] += 1


def collect_preferences(out: Path, items: list[Any]) -> dict[str, Any]:
    """Serve the items, let the scripted annotator judge them over HTTP, export pairs."""
    from rlft.feedback.exchange import preference_pairs, write_jsonl
    from rlft.feedback.server import BackgroundServer, create_app
    from rlft.feedback.store import Store

    store = Store(out / "feedback.db")
    store.add_items(items)
    token = store.add_annotator(f"scripted-{uuid.uuid4().hex[:8]}", consent=True)
    with BackgroundServer(create_app(store)) as server:
        counts = scripted_annotator(server.url, token)
    pairs = preference_pairs(store)
    write_jsonl(pairs, out / "pairs.jsonl")
    store.close()
    return {"judgements": counts, "pairs": len(pairs)}


def policy_scores(model_dir: Path, rm_dir: Path, task: Any, config: Any) -> dict[str, float]:
    """Sampled reviews of the held-out prompts (the recipe's eval sampling, seeded): mean
    reward-model score, mean hidden true score, and the share of wholly positive reviews."""
    from rlft.evaluation import evaluate
    from rlft.models.loading import load_policy
    from rlft.rewards.reward_model import load_reward_model, reward_scores
    from rlft.tasks.reviews import true_score, well_formed

    model, tokenizer = load_policy(str(model_dir))
    result = evaluate(model, tokenizer, task, task.eval_problems, config.rollout.max_new_tokens,
                      config.eval.batch_size, config.eval.temperature, config.eval.samples)  # fmt: skip
    prompts = [p.prompt for p in result.problems]
    rm, rm_tokenizer = load_reward_model(rm_dir)
    rm_scores = reward_scores(rm, rm_tokenizer, prompts, result.completions)
    truth = [true_score(c) for c in result.completions]
    malformed = sum(not well_formed(c) for c in result.completions) / len(result.completions)
    return {"rm_score": rm_scores.mean().item(), "true_score": sum(truth) / len(truth), "accuracy": result.accuracy,
            "malformed": malformed}  # fmt: skip


def run_rlhf(out: Path, items: int = 800, overrides: list[str] | None = None,
             rm_overrides: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Every stage, in order; returns the report (also written to OUT/rlhf.json)."""
    from rlft.config import config_from_dict
    from rlft.config.reward_model import rm_recipe_from_dict
    from rlft.tasks import build_task
    from rlft.trainers.registry import train
    from rlft.trainers.reward_model import train_reward_model

    started, seconds = time.time(), {}
    out.mkdir(parents=True, exist_ok=True)
    policy_recipe = yaml.safe_load((HERE / "policy.yaml").read_text())
    warm = copy.deepcopy(policy_recipe) | {"run_dir": str(out / "warm"), "reward": None}
    warm_config = config_from_dict(warm, [*(overrides or []), "train.steps=0"])
    train(warm_config, progress=progress)
    warm_model = out / "warm" / "final_model"
    seconds["warm_start"] = time.time() - started

    task = build_task(warm_config.task)
    gen = torch.Generator().manual_seed(warm_config.seed + 1)
    feedback = collect_preferences(out, sample_items(warm_model, task.train_problems(items, gen), warm_config.seed,
                                                      warm_config.rollout.max_new_tokens))
    seconds["preferences"] = time.time() - started - sum(seconds.values())

    rm_recipe = yaml.safe_load((HERE / "reward_model.yaml").read_text()) | {
        "train_data": str(out / "pairs.jsonl"), "model_path": str(warm_model), "output_dir": str(out / "reward_model")}
    rm_summary = train_reward_model(rm_recipe_from_dict(rm_recipe, rm_overrides), progress=progress)
    seconds["reward_model"] = time.time() - started - sum(seconds.values())

    ppo = copy.deepcopy(policy_recipe) | {"run_dir": str(out / "ppo")}
    ppo["model"] = {**ppo.get("model", {}), "path": str(warm_model)}
    ppo["warm_start"] = {**ppo.get("warm_start", {}), "steps": 0}
    ppo["reward"] = {**ppo["reward"], "path": str(out / "reward_model")}
    ppo_summary = train(config_from_dict(ppo, overrides), progress=progress)
    seconds["ppo"] = time.time() - started - sum(seconds.values())

    before = policy_scores(warm_model, out / "reward_model", task, warm_config)
    after = policy_scores(out / "ppo" / "final_model", out / "reward_model", task, warm_config)
    metrics = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    report = {
        "rm_pairwise_accuracy": rm_summary["eval_accuracy"],
        "rm_score_before": before["rm_score"], "rm_score_after": after["rm_score"],
        "true_score_before": before["true_score"], "true_score_after": after["true_score"],
        "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "malformed_before": before["malformed"], "malformed_after": after["malformed"],
        "kl_per_sequence_final": metrics[-1]["policy/kl_per_sequence"] if metrics else None,
        "pairs": feedback["pairs"], "judgements": feedback["judgements"],
        "rm_eval_pairs": rm_summary["eval_pairs"], "ppo_steps": ppo_summary["steps"],
        "eval_prompts": len(task.eval_problems),
        "seconds": {k: round(v, 1) for k, v in seconds.items()} | {"total": round(time.time() - started, 1)},
    }
    (out / "rlhf.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The RLHF example: preferences over HTTP, reward model, PPO.")
    parser.add_argument("--out", default="runs/rlhf", help="Folder for every stage (must not hold a run).")
    parser.add_argument("--items", type=int, default=800, help="Prompts to sample completion pairs for.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a field of policy.yaml for both the warm start and PPO.")
    parser.add_argument("--rm-set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a field of reward_model.yaml.")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    report = run_rlhf(Path(args.out), args.items, args.set, args.rm_set, args.progress)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
