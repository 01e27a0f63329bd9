"""Serving fairness, side by side (run by hand, not in CI): how long a 4-token request waits when it
arrives just after a big one, with the host's fair share (batches take turns between requests) and
without (batches in arrival order, as rlft served before).

The big request is the one of the issue that found it: 16 prompts x n=16 = 256 answers of
``--big-max-tokens`` tokens, sent through the official ``openai`` client over HTTP to `rlft serve`'s
app (its row cap raised to 256 for the test; by default such a request is refused with 400).
``--delay`` seconds later, once it is being sampled, a second client asks for 4 tokens. The model is
the tiny one at the demo's default shape (256 wide, 4 layers), untrained, so every answer runs to
its max_tokens and the arms do the same work. Each arm runs ``--repeats`` times, in turns with
the other; medians are reported. Last line: one JSON object.

    .venv/bin/python benchmarks/serving_fairness.py [--big-max-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

PROMPTS, N = 16, 16


def build_model(out: Path) -> Path:
    from rlft.config import TinyModelConfig
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks import ArithmeticTask

    return build_tiny_model(TinyModelConfig(), ArithmeticTask().corpus(500), out, seed=0)


def measure_once(client, host, big_max_tokens: int, delay: float) -> tuple[float, float, int]:
    """(small request's latency, big request's latency, batches) of one big + one small request."""
    big_s: list[float] = []

    def big() -> None:
        started = time.perf_counter()
        out = client.completions.create(
            model="tiny", prompt=[f"{i}+{i}=" for i in range(PROMPTS)], n=N,
            max_tokens=big_max_tokens, temperature=1.0,
        )  # fmt: skip
        assert len(out.choices) == PROMPTS * N
        big_s.append(time.perf_counter() - started)

    before = host.batches
    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(delay)
    started = time.perf_counter()
    small = client.completions.create(model="tiny", prompt="2+2=", max_tokens=4, temperature=1.0)
    small_s = time.perf_counter() - started
    assert small.usage.completion_tokens <= 4
    thread.join()
    return small_s, big_s[0], host.batches - before


def run(model_dir: Path, tmp: Path, big_max_tokens: int, delay: float, repeats: int) -> dict[str, dict]:
    """Both arms served at once, measured in turns (fair, arrival order, fair, ...), so that other
    load on the machine falls on both alike."""
    import openai

    from rlft.feedback.server import BackgroundServer
    from rlft.feedback.store import Store
    from rlft.serving.app import create_serving_app
    from rlft.serving.host import ModelHost

    arms = {}
    with contextlib.ExitStack() as stack:
        for name, fair_share in (("fair_share", True), ("arrival_order", False)):
            store = Store(tmp / f"{name}.db")
            stack.callback(store.close)
            token = store.add_annotator(name)
            host = stack.enter_context(ModelHost.from_folder(model_dir, max_batch_size=16, fair_share=fair_share))
            app = create_serving_app(host, store, model_name="tiny", max_rows_per_request=PROMPTS * N)
            server = stack.enter_context(BackgroundServer(app))
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=600)
            client.completions.create(model="tiny", prompt="1+1=", max_tokens=2)  # warm up
            arms[name] = (client, host, [])
        for _ in range(repeats):
            for client, host, results in arms.values():
                results.append(measure_once(client, host, big_max_tokens, delay))
    out = {}
    for name, (_, _, results) in arms.items():
        small, big, batches = zip(*results, strict=True)
        out[name] = {
            "small_latency_s": round(statistics.median(small), 3),
            "big_latency_s": round(statistics.median(big), 3),
            "small_latency_each_s": [round(s, 3) for s in small],
            "batches": batches[0],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-max-tokens", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds between the big and the small request")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "tiny")
        arms = run(model_dir, Path(tmp), args.big_max_tokens, args.delay, args.repeats)
    fair, fifo = arms["fair_share"], arms["arrival_order"]
    result = {
        "fair_share": fair,
        "arrival_order": fifo,
        "small_latency_ratio": round(fifo["small_latency_s"] / fair["small_latency_s"], 1),
        "big_latency_ratio": round(fair["big_latency_s"] / fifo["big_latency_s"], 2),
        "big_request": {"prompts": PROMPTS, "n": N, "max_tokens": args.big_max_tokens},
        "delay_s": args.delay,
        "repeats": args.repeats,
    }
    print(f"fair share (batches take turns): {fair}")
    print(f"arrival order (before):          {fifo}")
    print(f"the 4-token request waits x{result['small_latency_ratio']} less with fair share; "
          f"the big request takes x{result['big_latency_ratio']} as long")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
