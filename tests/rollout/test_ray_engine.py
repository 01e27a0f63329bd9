"""Ray rollout workers, built as a recipe builds them (``distributed.engine: ray`` ->
:func:`rlft.rollout.engine.build_rollout_engine`): they sample what the local sampler samples
from the same weights and seed, they sample the weights they were last pushed, a stale worker is
re-synced, and a whole run on workers (one of them killed mid-run) trains as a single process does."""

import json

import pytest
import torch

ray = pytest.importorskip("ray")

from safetensors.torch import load_file  # noqa: E402

import rlft  # noqa: E402
from rlft.config import config_from_dict  # noqa: E402
from rlft.models.loading import load_policy  # noqa: E402
from rlft.models.tokens import encode_prompts  # noqa: E402
from rlft.rollout.engine import LocalSampler, RolloutEngine, build_rollout_engine  # noqa: E402
from rlft.rollout.ray_engine import RayRolloutEngine  # noqa: E402

PROMPTS = ["1+2=", "3+4=", "5+6=", "7+8=", "12+30=", "9+9=", "40+2=", "6+61="]
RAY = ["distributed.engine=ray", "distributed.rollout_workers=2"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workers(tiny_model_dir, local_ray):
    """(the recipe's engine, the learner's policy, tokenizer); every test leaves them in sync."""
    policy, tok = load_policy(str(tiny_model_dir))
    engine = build_rollout_engine(config_from_dict({}, [f"model.path={tiny_model_dir}", *RAY]), policy)
    yield engine, policy, tok
    engine.shutdown()


def _sample(engine, policy, tok, seed=0):
    """(rollout, the generator after it) of ``engine`` on PROMPTS."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = encode_prompts(tok, PROMPTS)
    rollout = engine.sample(policy, ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                            max_new_tokens=6, temperature=1.0, generator=gen)
    return rollout, gen


def _same(a, b):
    return torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.completion_mask, b.completion_mask)


def test_the_recipes_ray_workers_sample_what_the_local_sampler_samples(workers, tiny_model_dir):
    engine, policy, tok = workers
    local = build_rollout_engine(config_from_dict({}, [f"model.path={tiny_model_dir}"]), policy)
    assert isinstance(engine, RayRolloutEngine) and isinstance(engine, RolloutEngine)
    assert isinstance(local, LocalSampler) and isinstance(local, RolloutEngine)
    assert len(engine.workers) == 2
    assert (engine.logprobs_are_policys, engine.approximate_logprobs) == (False, False)
    assert (local.logprobs_are_policys, local.approximate_logprobs) == (True, False)
    got, gen_ray = _sample(engine, policy, tok)
    want, gen_local = _sample(local, policy, tok)
    assert _same(got, want)
    assert got.completion_ids.shape[1] > 1 and len(set(map(tuple, got.completion_ids.tolist()))) > 1
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
    assert torch.equal(gen_ray.get_state(), gen_local.get_state())  # left where one process leaves it


def test_the_workers_sample_the_weights_last_pushed_to_them(workers):
    engine, policy, tok = workers
    before, _ = _sample(engine, policy, tok)
    version = engine.metrics()["distributed/weights_version"]
    saved = policy.lm_head.weight.detach().clone()
    with torch.no_grad():
        policy.lm_head.weight.mul_(50.0)  # the untrained policy's near-uniform choice turns greedy
    try:
        stale, _ = _sample(engine, policy, tok)
        assert _same(stale, before)  # the workers do not read the learner's model
        assert engine.push_weights(policy) == version + 1
        after, _ = _sample(engine, policy, tok)
        want, _ = _sample(LocalSampler(), policy, tok)
        assert _same(after, want) and not _same(after, before)
        assert engine.metrics()["distributed/weights_version"] == version + 1
    finally:
        with torch.no_grad():
            policy.lm_head.weight.copy_(saved)
        engine.push_weights(policy)


def test_a_stale_worker_is_detected_and_resynced(workers):
    engine, policy, tok = workers
    rejected = engine.stats.stale_rejections
    ray.get(engine.workers[1].set_weights.remote(0, engine._weights_ref))  # pretend it fell behind
    got, _ = _sample(engine, policy, tok)
    want, _ = _sample(LocalSampler(), policy, tok)
    assert engine.stats.stale_rejections == rejected + 1
    assert _same(got, want)


def _first_character(prompts, completions, **context):
    """An arbitrary reward on which the untrained policy's completions already differ, so every
    step has advantages to learn from (the arithmetic reward is 0 for all of them)."""
    return [ord(text[0]) % 10 / 10 if text else 0.0 for text in completions]


def _train(model_dir, run_dir, *extra):
    recipe = [f"model.path={model_dir}", "warm_start.steps=0", "task.eval_size=8", "train.steps=3",
              "train.batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=5",
              "train.learning_rate=1e-2", "eval.every=3", "checkpoint.every=3", "train.torch_threads=1",
              "seed=3", f"run_dir={run_dir}", *extra]
    rlft.train(overrides=recipe, reward=_first_character, progress=False)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = load_file(str(run_dir / "final_model" / "model.safetensors"))
    return [m for m in lines if "reward/mean" in m], weights


@pytest.mark.slow
def test_a_ray_run_trains_as_one_process_does_and_survives_a_killed_worker(
    tiny_model_dir, local_ray, tmp_path, monkeypatch
):
    single, w_single = _train(tiny_model_dir, tmp_path / "single")
    calls = []
    sample = RayRolloutEngine.sample

    def kill_one_worker_before_the_second_rollout(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            ray.kill(self.workers[0])
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(RayRolloutEngine, "sample", kill_one_worker_before_the_second_rollout)
    distributed, w_ray = _train(tiny_model_dir, tmp_path / "ray", *RAY)
    assert len(calls) == len(single) == len(distributed) == 3
    for a, b in zip(single, distributed, strict=True):
        assert a["reward/std"] > 0 and a["reward/mean"] == pytest.approx(b["reward/mean"])
        assert a["completions/mean_length"] == pytest.approx(b["completions/mean_length"])
        assert a["loss/total"] == pytest.approx(b["loss/total"], abs=1e-4)
    assert w_single.keys() == w_ray.keys()
    assert all(torch.allclose(w_single[k], w_ray[k], atol=1e-4) for k in w_single)
    base = load_file(str(tmp_path / "single" / "base_model" / "model.safetensors"))
    assert not all(torch.equal(w_single[k], base[k]) for k in w_single)  # the run trained
    assert distributed[-1]["distributed/worker_restarts"] == 1
    versions = [m["distributed/weights_version"] for m in distributed]
    assert [v - versions[0] for v in versions] == [0, 1, 2]  # one push per update
