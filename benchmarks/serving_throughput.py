"""Serving throughput, side by side (run by hand, not in CI): the same model behind `rlft serve`'s
app with request batching (max_batch_size 16) and without (max_batch_size 1), each hit by the
same concurrent clients through the official `openai` client over HTTP.

The model is the tiny one at the demo's default shape (256 wide, 4 layers), untrained, so every
answer runs to max_tokens: the cost per request is the same in both arms. Prints requests per
second and median latency of each arm and their ratios; last line: one JSON object.

    .venv/bin/python benchmarks/serving_throughput.py [--clients 16] [--requests 64] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path


def build_model(out: Path) -> Path:
    from rlft.config import TinyModelConfig
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks import ArithmeticTask

    return build_tiny_model(TinyModelConfig(), ArithmeticTask().corpus(500), out, seed=0)


def run_arm(model_dir: Path, db: Path, max_batch_size: int, clients: int, requests: int, max_tokens: int) -> dict:
    import openai

    from rlft.feedback.server import BackgroundServer
    from rlft.feedback.store import Store
    from rlft.serving.app import create_serving_app
    from rlft.serving.host import ModelHost

    store = Store(db)
    token = store.add_annotator(f"bench{max_batch_size}")
    host = ModelHost.from_folder(model_dir, max_batch_size=max_batch_size)
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = requests // clients

    with host, BackgroundServer(create_serving_app(host, store, model_name="tiny")) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=600)
        client.completions.create(model="tiny", prompt="1+1=", max_tokens=2)  # warm up

        def work(worker: int) -> None:
            for i in range(per_client):
                started = time.perf_counter()
                answer = client.completions.create(
                    model="tiny", prompt=f"{worker}+{i}=", max_tokens=max_tokens, temperature=1.0
                )
                assert answer.choices[0].text is not None
                with lock:
                    latencies.append(time.perf_counter() - started)

        batches_before = host.batches
        started = time.perf_counter()
        threads = [threading.Thread(target=work, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        batches = host.batches - batches_before
    store.close()
    return {
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "mean_batch_size": round(len(latencies) / max(batches, 1), 2),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "tiny")
        batched = run_arm(model_dir, Path(tmp) / "a.db", 16, args.clients, args.requests, args.max_tokens)
        single = run_arm(model_dir, Path(tmp) / "b.db", 1, args.clients, args.requests, args.max_tokens)
    result = {
        "batched": batched,
        "one_at_a_time": single,
        "throughput_ratio": round(batched["requests_per_s"] / single["requests_per_s"], 2),
        "p50_latency_ratio": round(single["p50_latency_s"] / batched["p50_latency_s"], 2),
        "clients": args.clients,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
    }
    print(f"batched (max_batch_size 16): {batched}")
    print(f"one at a time (max_batch_size 1): {single}")
    print(f"throughput x{result['throughput_ratio']}, median latency x{result['p50_latency_ratio']} lower")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
