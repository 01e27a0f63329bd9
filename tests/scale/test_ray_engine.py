"""Ray rollout workers: the same seed gives the single-process learning curve, and killing a
worker mid-run loses nothing (it is restarted, its shard re-issued, the event counted)."""

import pytest
import torch

ray = pytest.importorskip("ray")

from rlft.config import config_from_dict  # noqa: E402
from rlft.distributed.ray_engine import RayRolloutEngine  # noqa: E402
from rlft.models.loading import frozen_reference, load_policy  # noqa: E402
from rlft.tasks import ArithmeticTask  # noqa: E402
from rlft.trainers import loop  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(model_dir, engine_workers=0, kill_before_step=None, monkeypatch=None):
    config = config_from_dict(
        {},
        [
            f"model.path={model_dir}",
            "train.batch_size=8",
            "algorithm.group_size=4",
            "rollout.max_new_tokens=5",
            "train.learning_rate=1e-2",
            "seed=3",
        ],
    )
    torch.manual_seed(0)
    policy, tok = load_policy(str(model_dir))
    reference = frozen_reference(policy)
    learner = loop.build_learner(config, policy)
    optimizer = torch.optim.AdamW(learner.modules().parameters(), lr=config.train.learning_rate)
    task = ArithmeticTask(eval_size=16)
    extra = [loop.make_reward_fn(config, task)] if hasattr(loop, "make_reward_fn") else []
    engine = None
    if engine_workers:
        engine = RayRolloutEngine(policy, num_workers=engine_workers)
        monkeypatch.setattr(loop, "sample", engine.sample)  # what distributed.engine=ray wires in
    curve = []
    try:
        for step in range(STEPS):
            if engine is not None and step == kill_before_step:
                ray.kill(engine.workers[0])
            metrics, finite = loop.rl_step(
                config, learner, reference, tok, optimizer, task, step, 0.04, *extra
            )
            assert finite
            if engine is not None:
                engine.push_weights(policy)
                metrics.update(engine.metrics())
            curve.append(metrics)
    finally:
        if engine is not None:
            engine.shutdown()
    weights = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    return curve, weights


@pytest.mark.slow
def test_ray_reproduces_single_process_and_survives_a_killed_worker(
    tiny_model_dir, local_ray, monkeypatch
):
    single, w_single = _run(tiny_model_dir)
    distributed, w_ray = _run(
        tiny_model_dir, engine_workers=2, kill_before_step=1, monkeypatch=monkeypatch
    )
    for a, b in zip(single, distributed, strict=True):
        assert a["reward/mean"] == pytest.approx(b["reward/mean"])
        assert a["completions/mean_length"] == pytest.approx(b["completions/mean_length"])
        assert a["loss/total"] == pytest.approx(b["loss/total"], abs=1e-4)
    assert torch.allclose(w_single, w_ray, atol=1e-4)
    assert distributed[-1]["distributed/worker_restarts"] == 1
    assert distributed[-1]["distributed/weights_version"] == STEPS + 1


@pytest.mark.slow
def test_stale_worker_is_detected_and_resynced(tiny_model_dir, local_ray):
    policy, tok = load_policy(str(tiny_model_dir))
    engine = RayRolloutEngine(policy, num_workers=2)
    try:
        ray.get(
            engine.workers[1].set_weights.remote(0, engine._weights_ref)
        )  # pretend it fell behind
        ids, mask = loop.encode_prompts(tok, ["1+2=", "3+4=", "5+6=", "7+8="])
        kwargs = dict(
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=4
        )
        got = engine.sample(policy, ids, mask, generator=torch.Generator().manual_seed(0), **kwargs)
        want = loop.sample(policy, ids, mask, generator=torch.Generator().manual_seed(0), **kwargs)
        assert engine.stats.stale_rejections == 1
        assert torch.equal(got.completion_ids, want.completion_ids)
    finally:
        engine.shutdown()
