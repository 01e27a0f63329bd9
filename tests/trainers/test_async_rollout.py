"""rollout.async: the producer samples batch t with the weights after step t - k while the learner
trains; k = 0 is the synchronous loop bit for bit, a lagged run is reproducible, the stale batch's
log-probs correct the update, an error in the producer reaches the learner with its traceback,
and a run killed mid-way resumes."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from rlft.config import config_from_dict
from rlft.errors import ConfigError, RlftError
from rlft.trainers.async_rollout import StageOrder, sampling_version
from rlft.trainers.registry import train

TINY = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1",
    "model.tiny.intermediate_size=64", "task.eval_size=8", "train.batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "train.torch_threads=1", "train.steps=4", "eval.every=2", "warm_start.steps=4",
    "warm_start.batch_size=8", "checkpoint.every=2",
]  # fmt: skip


def _run(tmp_path, name, *overrides, **kwargs):
    config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / name}", *overrides])
    summary = train(config, progress=False, **kwargs)
    lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, lines


def _stable(lines):
    return [{k: v for k, v in line.items() if not k.startswith(("perf/", "async/learner_idle", "async/producer_idle",
                                                                   "async/queue_depth"))} for line in lines]


def _weights(tmp_path, name):
    from safetensors.torch import load_file

    return load_file(str(tmp_path / name / "final_model" / "model.safetensors"))


def test_the_lag_is_fixed_and_never_reaches_before_the_start():
    assert [sampling_version(t, 1, 0) for t in range(5)] == [0, 0, 1, 2, 3]
    assert [sampling_version(t, 2, 0) for t in range(5)] == [0, 0, 0, 1, 2]
    assert [sampling_version(t, 2, 6) for t in range(6, 10)] == [6, 6, 6, 7]  # resumed at step 6


def test_max_staleness_zero_is_the_synchronous_loop_bit_for_bit(tmp_path):
    _, sync = _run(tmp_path, "sync")
    _, zero = _run(tmp_path, "zero", "rollout.async.enabled=true", "rollout.async.max_staleness=0")
    assert _stable(sync) == _stable(zero) and "async/staleness_mean" not in zero[0]
    assert all(torch.equal(a, b) for a, b in zip(_weights(tmp_path, "sync").values(), _weights(tmp_path, "zero").values(), strict=True))


def test_a_lagged_run_is_reproducible_and_corrects_for_its_stale_batches(tmp_path):
    lagged = ["rollout.async.enabled=true", "rollout.async.max_staleness=1"]
    _, first = _run(tmp_path, "a", *lagged)
    _, second = _run(tmp_path, "b", *lagged)
    _, sync = _run(tmp_path, "sync")
    assert _stable(first) == _stable(second)  # a fixed lag, not "whatever the producer had"
    assert all(torch.equal(a, b) for a, b in zip(_weights(tmp_path, "a").values(), _weights(tmp_path, "b").values(), strict=True))
    assert [m["async/staleness_mean"] for m in first] == [0.0, 1.0, 1.0, 1.0]
    assert all(m["async/dropped_batches"] == 0.0 for m in first)
    # Step 0 is sampled by the starting weights, as in the synchronous run; later steps by older ones.
    assert first[0]["reward/mean"] == sync[0]["reward/mean"]
    assert "rollout/sampler_logprob_gap" not in first[0]  # its log-probs are the learner's own
    assert all(m["rollout/sampler_logprob_gap"] > 0 for m in first[1:])  # the stale ones are corrected
    assert threading.active_count() < 10 and not any(t.name == "rlft-rollout-producer" for t in threading.enumerate())


def test_an_error_in_the_producer_reaches_the_learner_with_its_traceback(tmp_path):
    sampled = []

    def flaky(prompts, completions, **context):  # a judge that goes down on the producer's third batch
        if threading.current_thread().name == "rlft-rollout-producer":
            sampled.append(1)
            if len(sampled) == 3:
                raise ValueError("the judge is down")
        return [0.0] * len(completions)

    # (reward_limits.timeout=null: the reward runs in the thread that calls it, here the producer)
    config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / 'run'}", "rollout.async.enabled=true",
                                   "reward_limits.timeout=null"])
    with pytest.raises(RlftError, match="(?s)rollout producer.*the judge is down"):
        train(config, progress=False, reward=flaky)
    assert len(sampled) >= 3  # (then once per row: rlft.rewards.score looks for the row that fails)
    assert not any(t.name == "rlft-rollout-producer" for t in threading.enumerate())


class Crash(Exception):
    pass


def test_a_lagged_run_killed_mid_way_resumes_from_its_checkpoint(tmp_path):
    lagged = ["rollout.async.enabled=true", "rollout.async.max_staleness=1"]

    def crash_after_3(metrics):
        if metrics["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        _run(tmp_path, "run", *lagged, on_step=crash_after_3)
    summary, lines = _run(tmp_path, "run", *lagged, resume=True)
    assert summary["steps"] == 4 and [m["step"] for m in lines] == [1, 2, 3, 4]
    # The queue is not saved: the resumed step 3 is sampled by the checkpoint's own weights.
    assert lines[2]["async/staleness_mean"] == 0.0 and lines[3]["async/staleness_mean"] == 1.0


def test_async_refuses_vllm_and_several_ranks():
    from rlft.config.asynchronous import check_async_recipe
    from rlft.trainers.parallel import Ranks, check_parallel_recipe

    config = config_from_dict({}, ["rollout.async.enabled=true"])
    vllm = type("C", (), {"rollout": type("R", (), {"async_": config.rollout.async_, "backend": "vllm",
                                                    "compile": False})()})()
    with pytest.raises(ConfigError, match="rollout.async with rollout.backend='vllm'"):
        check_async_recipe(vllm)
    with pytest.raises(ConfigError, match="one learner process"):
        check_parallel_recipe(config, Ranks(0, 2, "ddp"))


def _lanes(order, steps, lanes, log, hold_reward_of=None, seen=None):
    """``lanes`` threads driving ``order`` through ``steps`` the way the producer's threads do."""
    lock = threading.Lock()

    def note(kind, step):
        with lock:
            log.append((kind, step))

    def lane(first):
        for step in range(first, steps, lanes):
            order.start_sampling(step)
            note("sample", step)
            order.start_reward(step)
            note("reward", step)
            if step == hold_reward_of:  # does the next step sample while this one is rewarded?
                seen.wait(timeout=2)
            note("rewarded", step)
            order.end_reward(step)
            order.wait_to_put(step)
            note("put", step)
            order.put_done(step)

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("overlap", [True, False])
def test_stages_run_in_step_order_and_overlap_only_where_allowed(overlap):
    order, log, seen = StageOrder(0, overlap=overlap), [], threading.Event()
    threads = _lanes(order, 6, 2 if overlap else 1, log, hold_reward_of=0, seen=seen)
    # The test's own watcher: it sets `seen` once step 1 has started sampling.
    for _ in range(400):
        if ("sample", 1) in log:
            seen.set()
            break
        threading.Event().wait(0.005)
    for t in threads:
        t.join(timeout=10)
    for kind in ("sample", "reward", "put"):
        assert [s for k, s in log if k == kind] == list(range(6)), kind
    sampled_next, reward_done = log.index(("sample", 1)), log.index(("rewarded", 0))
    assert (sampled_next < reward_done) is overlap  # step 1 sampled while step 0 was rewarded, or after


def test_a_pause_waits_for_the_stage_in_flight_and_holds_the_next():
    order = StageOrder(0, overlap=True)
    order.start_sampling(0)
    paused, resumed = threading.Event(), threading.Event()

    def learner():
        with order.paused():
            paused.set()
            resumed.wait(timeout=5)

    thread = threading.Thread(target=learner)
    thread.start()
    assert not paused.wait(timeout=0.2)  # step 0 is still sampling
    started = threading.Event()
    producer = threading.Thread(target=lambda: (order.start_reward(0), started.set()))
    producer.start()
    assert paused.wait(timeout=5)  # step 0 left its sampling stage: the pause holds
    assert not started.wait(timeout=0.2)  # and its reward stage waits for the pause to end
    resumed.set()
    assert started.wait(timeout=5)
    thread.join(timeout=5)
    producer.join(timeout=5)


@pytest.mark.parametrize("sampler,threads", [("uniform", 2), ("curriculum", 1)])
def test_a_real_run_rewards_in_step_order_on_two_producer_threads_unless_prompts_depend_on_rewards(
        tmp_path, sampler, threads):
    calls = []

    def judge(prompts, completions, **context):
        if threading.current_thread().name == "rlft-rollout-producer":
            calls.append(threading.get_ident())
        return [float(len(c) % 2) for c in completions]

    task = ["task.name=multistep", "task.train_size=16", "task.eval_size=8"] if sampler == "curriculum" else []
    config = config_from_dict({}, [*TINY, *task, f"task.sampler={sampler}", f"run_dir={tmp_path / 'run'}",
                                   "rollout.async.enabled=true", "reward_limits.timeout=null", "train.steps=6"])
    train(config, progress=False, reward=judge)
    assert len(calls) == 6 and len(set(calls)) == threads
    if threads == 2:  # the lanes take alternate steps
        assert calls[0::2] == [calls[0]] * 3 and calls[1::2] == [calls[1]] * 3 and calls[0] != calls[1]
