"""Load on the live feedback server: concurrent annotators, retries, and a count of the rows.

    python benchmarks/feedback_load.py [--clients 20] [--per-client 200] [--db PATH]

The server (``rlft.feedback.server.BackgroundServer`` on uvicorn, a SQLite file in WAL mode) runs
in a child process on a free 127.0.0.1 port, so clients and server do not share one interpreter
lock. Each client is one annotator with its own token and HTTP connection pool; it judges every
one of ``per_client`` items once (distinct idempotency keys). One judgement in ten is sent twice
with the same key: half of those as two racing requests on two connections, half as a retry after
the first answer, as a double click or a client timeout would. Every repeat must be answered 200
(``duplicate: true``) and stored once.

Afterwards the database file is read directly with ``sqlite3``: every expected judgement must be
there exactly once with the choice the client sent (``lost`` = missing or wrong, ``duplicates`` =
rows beyond one per judgement, counted both by key and by (annotator, item)). Exit status 1 if any
judgement was lost or double-stored or any request failed.

The last line is one JSON object: submitted, stored, duplicates, lost, retries,
retries_deduplicated, requests, failed, p50_ms, p99_ms (client-side latency over every request),
wall_s, judgements_per_s. Figures: docs/feedback.md (Load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rlft.feedback.store import Item, Store

CHOICES = ("A", "B", "tie")


def serve_in_child(db: str, conn: mp.connection.Connection) -> None:
    """Child process: serve the store until the parent sends anything on ``conn``."""
    from rlft.feedback.server import BackgroundServer, create_app

    store = Store(db)
    with BackgroundServer(create_app(store)) as server:
        conn.send(server.url)
        conn.recv()  # blocks until the parent is done
    store.close()


def prepare(db: Path, clients: int, per_client: int) -> list[str]:
    """Items and consenting annotators in a fresh database; returns the annotators' tokens."""
    store = Store(db)
    store.add_items(
        Item(f"item-{i:04d}", f"Question {i}?", f"Answer A to {i}.", f"Answer B to {i}.")
        for i in range(per_client)
    )
    tokens = [store.add_annotator(f"annotator-{c:02d}", consent=True) for c in range(clients)]
    store.close()
    return tokens


async def post(
    client: httpx.AsyncClient, body: dict[str, str], latencies: list[float]
) -> httpx.Response:
    start = time.perf_counter()
    res = await client.post("/api/judgements", json=body)
    latencies.append(time.perf_counter() - start)
    return res


async def annotate(
    url: str, token: str, c: int, per_client: int, latencies: list[float], stats: dict[str, int]
) -> dict[str, str]:
    """One annotator: a judgement for each item, some repeated; returns {key: choice} sent."""
    rng = random.Random(c)
    sent: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=2)  # two, so a racing repeat goes on its own connection
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        for i in range(per_client):
            key = f"load-{c:02d}-{i:04d}"
            body = {
                "item_id": f"item-{i:04d}",
                "choice": rng.choice(CHOICES),
                "idempotency_key": key,
            }
            sent[key] = body["choice"]
            if i % 20 == 0:  # a double click: two requests with one key, in flight together
                answers = await asyncio.gather(*(post(client, body, latencies) for _ in range(2)))
            elif i % 20 == 10:  # a client retry after the first answer
                answers = [await post(client, body, latencies) for _ in range(2)]
            else:
                answers = [await post(client, body, latencies)]
            codes = sorted(a.status_code for a in answers)
            stats["requests"] += len(answers)
            if len(answers) == 2:
                stats["retries"] += 1
                stats["retries_deduplicated"] += codes == [200, 201] and any(
                    a.json().get("duplicate") for a in answers
                )
            if 201 not in codes or any(code not in (200, 201) for code in codes):
                stats["failed"] += 1
                print(f"client {c} item {i}: answers {codes}", file=sys.stderr)
    return sent


def count_rows(db: Path, expected: dict[str, str]) -> dict[str, int]:
    """Check the database file against what the clients sent."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT idempotency_key, choice FROM judgements").fetchall()
        per_pair = conn.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT annotator_id || '/' || item_id) FROM judgements"
        ).fetchone()[0]
    finally:
        conn.close()
    stored: dict[str, list[str]] = {}
    for key, choice in rows:
        stored.setdefault(key, []).append(choice)
    lost = sum(1 for key, choice in expected.items() if stored.get(key, [None])[0] != choice)
    by_key = sum(len(choices) - 1 for choices in stored.values())
    return {"stored": len(rows), "lost": lost, "duplicates": max(by_key, int(per_pair))}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_clients(
    url: str, tokens: list[str], per_client: int
) -> tuple[dict[str, str], list[float], dict[str, int]]:
    latencies: list[float] = []
    stats = {"requests": 0, "retries": 0, "retries_deduplicated": 0, "failed": 0}
    sent_each = await asyncio.gather(
        *(annotate(url, t, c, per_client, latencies, stats) for c, t in enumerate(tokens))
    )
    expected = {k: v for sent in sent_each for k, v in sent.items()}
    return expected, latencies, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=200)
    parser.add_argument(
        "--db", type=Path, default=None, help="a new SQLite file (default: a temp one)"
    )
    args = parser.parse_args(argv)
    db = args.db or Path(tempfile.mkdtemp(prefix="rlft-feedback-load-")) / "feedback.db"
    if db.exists():
        parser.error(f"{db} exists; the count needs a fresh database")
    tokens = prepare(db, args.clients, args.per_client)

    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=serve_in_child, args=(str(db), child))
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the feedback server did not start within 60 s")
        url = parent.recv()
        start = time.perf_counter()
        expected, latencies, stats = asyncio.run(run_clients(url, tokens, args.per_client))
        wall_s = time.perf_counter() - start
    finally:
        parent.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.terminate()

    counts = count_rows(db, expected)
    result = {
        "submitted": len(expected),
        **counts,
        **stats,
        "clients": args.clients,
        "p50_ms": round(1000 * percentile(latencies, 0.50), 2),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
        "wall_s": round(wall_s, 2),
        "judgements_per_s": round(len(expected) / wall_s, 1),
        "db": str(db),
    }
    print(f"{result['submitted']} judgements from {args.clients} clients in {wall_s:.1f} s; "
          f"{stats['requests']} requests, {stats['retries']} repeated keys")  # fmt: skip
    print(f"latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(f"stored {counts['stored']}, lost {counts['lost']}, double-stored {counts['duplicates']}")
    print(json.dumps(result))
    ok = counts["lost"] == 0 and counts["duplicates"] == 0 and counts["stored"] == len(expected)
    return 0 if ok and stats["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
