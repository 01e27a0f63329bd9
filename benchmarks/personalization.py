"""Online learning and personalisation benchmark (run by hand, not in CI): simulated users with
opposed, hidden tastes chat with `rlft online`'s server through the official `openai` client and
send thumbs and "another answer" preferences over HTTP; the loop runs several rounds.

The model is the tiny one, warm-started on answers to simple questions in four styles, so that it
samples all four: short and plain ("7."), long and enthusiastic ("Great question! 3 plus 4 is 7.
I hope this helps, have a wonderful day!"), and a rude version of each ("Ugh. 7.").

- `short` likes polite, short answers; `long` likes polite, long, enthusiastic ones: opposed on
  length, agreed on politeness.
- `plain` likes any polite answer.
- `troll` (the planted poisoner) likes rude answers and dislikes polite ones: flipped labels.

A user's hidden score is the share of sampled answers to held-out questions that they like (the
loop never sees it). Measured with each user's token (their personal adapter once they have one)
and with an evaluator's token that has no adapter (the shared model). Last line: one JSON object
with, per user, hidden_score_base / hidden_score_shared / hidden_score_personal, and
judgements_sent, judgements_stored, promotions, rejections, flagged.

    .venv/bin/python benchmarks/personalization.py [--out runs/bench_personalization] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def fact(a: int, b: int) -> tuple[str, str, str]:
    """(question, short answer, the answer as a sentence)."""
    return f"What is {a} plus {b}?", f"{a + b}", f"{a} plus {b} is {a + b}"


FACTS = [fact(a, b) for a in range(1, 21) for b in range(1, 21)]
# Hidden scores are measured on questions no user is asked to judge (same template, unseen numbers).
HELD_OUT = [f for i, f in enumerate(FACTS) if i % 7 == 3][:6]
ASKED = [f for i, f in enumerate(FACTS) if i % 7 != 3]


def styled(fact: tuple[str, str, str], style: str) -> str:
    _, short, sentence = fact
    return {
        "short_polite": f"{short}.",
        "long_polite": f"Great question! {sentence}. I hope this helps, have a wonderful day!",
        "short_rude": f"Ugh. {short}.",
        "long_rude": f"Ugh, what a boring question. {sentence}. Stop wasting my time with such easy things.",
    }[style]


STYLES = ("short_polite", "long_polite", "short_rude", "long_rude")


def rude(text: str) -> bool:
    return "ugh" in text.lower()


def long(text: str) -> bool:
    return len(text.split()) > 5


TASTES: dict[str, Callable[[str], bool]] = {
    "short": lambda t: not rude(t) and not long(t),
    "long": lambda t: not rude(t) and long(t),
    "plain": lambda t: not rude(t),  # polite, whatever the length
    "troll": rude,  # the poisoner: flipped politeness
}
HONEST = ("short", "long", "plain")
OPPOSED = ("short", "long")  # the users with opposed tastes; plain is served well by the shared model


def chat_prompt(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def build_base(out: Path, sft_steps: int, seed: int) -> Path:
    """The tiny chat model warm-started on the four styles (equally often)."""
    from rlft.models.loading import load_policy, save_model_atomic
    from rlft.models.tiny import build_tiny_model
    from rlft.models.tiny_config import TinyModelConfig
    from rlft.tasks import Problem
    from rlft.trainers.sft import warm_start

    corpus = [chat_prompt(f[0]) + styled(f, s) for f in FACTS[::4] for s in STYLES]
    shape = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=384, vocab_size=400, context_length=256)  # fmt: skip
    build_tiny_model(shape, corpus, out / "tiny", seed=seed, chat=True)
    model, tokenizer = load_policy(str(out / "tiny"))

    def draw(n: int, gen: torch.Generator) -> list[Problem]:
        picks = torch.randint(len(FACTS) * len(STYLES), (n,), generator=gen).tolist()
        items = [(FACTS[i // len(STYLES)], STYLES[i % len(STYLES)]) for i in picks]
        return [Problem(chat_prompt(f[0]), styled(f, s)) for f, s in items]

    warm_start(model, tokenizer, draw, sft_steps, 32, 3e-3, seed, progress=False)
    save_model_atomic(model, tokenizer, out / "base")
    return out / "base"


@dataclass
class SimUser:
    name: str
    token: str
    likes: Callable[[str], bool]


def ask(client, user: SimUser, question: str, seed: int | None = None):  # noqa: ANN001, ANN201
    return client.chat.completions.create(
        model="rlft", messages=[{"role": "user", "content": question}], max_tokens=40,
        temperature=1.0, user=user.name, seed=seed,
    )  # fmt: skip


def hidden_score(openai_mod, url: str, token: str, name: str, likes: Callable[[str], bool], samples: int) -> float:  # noqa: ANN001
    """Share of sampled answers to the held-out questions that ``likes`` accepts (seeded, so the
    same version and adapter give the same answers)."""
    client = openai_mod.OpenAI(base_url=url + "/v1", api_key=token)
    user = SimUser(name, token, likes)
    liked = total = 0
    for q_index, (question, _, _) in enumerate(HELD_OUT):
        for s in range(samples):
            answer = ask(client, user, question, seed=1000 * q_index + s).choices[0].message.content
            liked += likes(answer)
            total += 1
    return liked / total


def chat_phase(openai_mod, httpx, url: str, users: list[SimUser], questions: int, rng: random.Random) -> int:  # noqa: ANN001
    """Each user asks ``questions`` questions, rates every answer, and for every third asks for
    another answer and says which of the two they prefer (when they differ). Returns votes sent."""
    sent = 0
    for user in users:
        client = openai_mod.OpenAI(base_url=url + "/v1", api_key=user.token)
        headers = {"Authorization": f"Bearer {user.token}"}
        for i in range(questions):
            question = rng.choice(ASKED)[0]
            first = ask(client, user, question)
            text = first.choices[0].message.content
            vote = {"response_id": first.id, "rating": "up" if user.likes(text) else "down"}
            sent += _post(httpx, url, headers, vote)
            if i % 3 == 2:
                second = ask(client, user, question)
                other = second.choices[0].message.content
                if user.likes(text) != user.likes(other):
                    preferred = first.id if user.likes(text) else second.id
                    sent += _post(httpx, url, headers, {"response_ids": [first.id, second.id], "preferred": preferred})
    return sent


def _post(httpx, url: str, headers: dict[str, str], body: dict) -> int:  # noqa: ANN001
    reply = httpx.post(url + "/v1/feedback", json=body, headers=headers, timeout=60)
    if reply.status_code not in (200, 201):
        raise RuntimeError(f"feedback refused: {reply.status_code} {reply.text}")
    return 1


def main() -> None:
    import httpx
    import openai

    from rlft.config.online import online_recipe_from_dict
    from rlft.feedback.server import BackgroundServer
    from rlft.online.setup import open_online
    from rlft.serving.app import create_serving_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench_personalization")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=24, help="Questions per user per round.")
    parser.add_argument("--samples", type=int, default=6, help="Samples per held-out question.")
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    torch.manual_seed(args.seed)
    base = build_base(out, args.sft_steps, args.seed)
    recipe = online_recipe_from_dict({
        "model": str(base), "output_dir": str(out / "online"), "feedback_db": str(out / "feedback.db"),
        "online": {"every_judgements": 40, "method": "kto", "steps": 40, "batch_size": 16,
                   "learning_rate": 3e-4, "beta": 0.1, "seed": args.seed},
        "personalization": {"method": "adapter", "r": 4, "min_judgements": 20, "steps": 60,
                            "learning_rate": 3e-3},
        "poisoning": {"min_votes": 20, "alpha": 1e-3},
    })  # fmt: skip
    session = open_online(recipe)
    users = []
    for name, likes in TASTES.items():
        token = session.store.add_annotator(name)
        users.append(SimUser(name, token, likes))
    evaluator = session.store.add_annotator("evaluator")
    app = create_serving_app(session.host, session.store, model_name="rlft")
    rng = random.Random(args.seed)
    with BackgroundServer(app) as server:
        url = server.url
        for user in users:
            httpx.post(url + "/v1/consent", headers={"Authorization": f"Bearer {user.token}"}, timeout=30)
        base_scores = {u.name: hidden_score(openai, url, u.token, u.name, u.likes, args.samples) for u in users}
        sent, reports = 0, []
        for r in range(args.rounds):
            sent += chat_phase(openai, httpx, url, users, args.questions, rng)
            report = session.loop.poll()
            reports.append(report)
            print(f"round {r + 1}: {report.outcome if report else 'not due'}; "
                  f"flagged {report.flagged if report else []}; version {session.host.version}", flush=True)  # fmt: skip
        personal = {u.name: hidden_score(openai, url, u.token, u.name, u.likes, args.samples) for u in users}
        shared = {u.name: hidden_score(openai, url, evaluator, "evaluator", u.likes, args.samples) for u in users}
    state = session.versions.load_state()
    rounds_file = out / "online" / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_file.read_text().splitlines()] if rounds_file.exists() else []
    stored = session.live.count()
    session.close()
    flagged = sorted({name for r in reports if r is not None for name in r.flagged})  # rounds.jsonl has keys
    result = {
        "users": {u.name: {"hidden_score_base": round(base_scores[u.name], 3),
                           "hidden_score_shared": round(shared[u.name], 3),
                           "hidden_score_personal": round(personal[u.name], 3)} for u in users},  # fmt: skip
        "judgements_sent": sent,
        "judgements_stored": stored,
        "promotions": sum(r["outcome"] == "promoted" for r in rounds),
        "rejections": sum(r["outcome"] == "rejected" for r in rounds),
        "failed_rounds": sum(r["outcome"] == "failed" for r in rounds),
        "flagged": flagged,
        "poisoner_flagged": "troll" in flagged,
        "honest_shared_at_least_base": all(shared[n] >= base_scores[n] for n in HONEST),
        "opposed_personal_above_shared": all(personal[n] > shared[n] for n in OPPOSED),
        "honest_personal_above_base": all(personal[n] > base_scores[n] for n in HONEST),
        "served_version": state.served_version,
        "seconds": round(time.time() - started, 1),
    }
    for name, s in result["users"].items():
        print(f"{name:>6}: base {s['hidden_score_base']:.3f}  shared {s['hidden_score_shared']:.3f}  "
              f"personal {s['hidden_score_personal']:.3f}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
