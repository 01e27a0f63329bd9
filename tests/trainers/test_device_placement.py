"""One device for a run (``train.device``): every model a trainer builds is on it, every tensor a
step touches is on it, ``train.device: cpu`` is today's default bit for bit, a missing GPU is one
clear error, and a checkpoint saved from CUDA tensors resumes on a CPU-only machine.

No GPU here: the placement tests build the trainers on the ``meta`` device (a copy made before the
move would stay on the CPU and be caught), and run steps under :class:`OneDeviceMode`, which
treats the run's tensors as a second device and records every operation that mixes them with
tensors made without saying where (a CUDA run would fail there)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from device_mode import OneDeviceMode, tag, tag_modules

from rlft.config import config_from_dict
from rlft.config.agent import load_agent_config
from rlft.errors import ConfigError
from rlft.models.device import resolve_device
from rlft.trainers.parallel import Ranks
from rlft.trainers.setup import open_run

META = torch.device("meta")
TINY = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1",
    "model.tiny.intermediate_size=64", "task.eval_size=8", "train.batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "train.torch_threads=1", "train.steps=2", "eval.every=1",
]  # fmt: skip


def _on(device: torch.device, *modules: torch.nn.Module | None) -> list[str]:
    """Names of the parameters and buffers of ``modules`` that are not on ``device``."""
    wrong = []
    for i, module in enumerate(m for m in modules if m is not None):
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.device != device:
                wrong.append(f"module {i}: {name} on {t.device}")
    return wrong


def _rl_trainer(tmp_path, device: torch.device, *overrides: str):
    from rlft.trainers.loop import RLTrainer

    config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / 'run'}", "warm_start.steps=0", *overrides])
    session, task = open_run(config, resume=False)
    session.ranks = Ranks(device=device)
    return session, RLTrainer(config, session, task, progress=False)


@pytest.mark.parametrize("overrides", [
    (), ("algorithm.name=ppo",), ("algorithm.name=ppo", "algorithm.critic=separate"),
    ("rollout.dtype=bfloat16",), ("lora.r=4",),
], ids=["grpo", "ppo-value-head", "ppo-separate-critic", "bf16-rollout", "lora"])  # fmt: skip
def test_rl_trainer_builds_every_model_on_the_run_device(tmp_path, overrides):
    session, trainer = _rl_trainer(tmp_path, META, *overrides)
    with session:
        learner, engine = trainer.learner, trainer.engine
        copies = [getattr(engine, "model", None)]  # a low-precision sampler's copy
        assert _on(META, learner.policy, learner.value_head, learner.critic_trunk, trainer.reference, *copies) == []
        assert all(p.device == META for group in trainer.optimizer.param_groups for p in group["params"])
        assert trainer.device == META


def test_dpo_trainer_builds_its_models_on_the_run_device(tmp_path):
    from rlft.trainers.dpo import DPOTrainer

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i)}) + "\n"
                             for i in range(8)))
    config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / 'run'}", "warm_start.steps=0", "algorithm.name=dpo",
                                   f"preference.data={pairs}", "preference.batch_size=4"])
    session, task = open_run(config, resume=False)
    session.ranks = Ranks(device=META)
    with session:
        trainer = DPOTrainer(config, session, task, progress=False)
        assert _on(META, trainer.policy, trainer.reference) == []


TINY_AGENT = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
    "model.intermediate_size=64", "warm_start.steps=0", "episodes=16", "episodes_per_iteration=8", "group_size=4",
    "eval_samples=1", "episode.max_turn_tokens=8", "episode.max_total_tokens=40", "torch_threads=1",
    "ilql.batch_size=8",
]  # fmt: skip


def _agent_trainer(tmp_path, algorithm: str, device: torch.device, *extra: str):
    from rlft.trainers.agent import open_agent_run
    from rlft.trainers.registry import AGENT_TRAINERS

    config = load_agent_config(None, [*TINY_AGENT, f"algorithm={algorithm}", f"run_dir={tmp_path / algorithm}", *extra])
    cls = AGENT_TRAINERS[algorithm]
    session = open_agent_run(config, False, cls)
    session.ranks = Ranks(device=device)
    return session, cls(config, session, progress=False)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo", "archer", "ilql"])
def test_agent_trainers_build_every_model_on_the_run_device(tmp_path, algorithm):
    extra = ()
    if algorithm == "ilql":  # its logged episodes are played by the base on the CPU first
        cpu_session, _ = _agent_trainer(tmp_path / "cpu", "ilql", torch.device("cpu"))
        cpu_session.__exit__(None, None, None)
        extra = (f"ilql.data={tmp_path / 'cpu' / 'ilql' / 'logged_episodes.jsonl'}",)
    session, trainer = _agent_trainer(tmp_path, algorithm, META, *extra)
    with session:
        models = [trainer.policy, getattr(trainer, "reference", None), getattr(trainer, "heads", None),
                  getattr(trainer, "critic", None), getattr(trainer, "target", None)]
        learner = getattr(trainer, "learner", None)
        if learner is not None:
            models += [learner.value_head, learner.critic_trunk]
        assert _on(META, *models) == []
        if algorithm == "ilql":
            assert trainer.data.completion_ids.device == META


def test_reward_model_trainer_builds_its_model_on_the_run_device(tmp_path):
    from rlft.config.reward_model import RewardModelRecipe, rm_recipe_from_dict
    from rlft.responsible.privacy import RunScrubber
    from rlft.trainers.reward_model import RewardModelTrainer
    from rlft.trainers.session import open_session

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good answer", "rejected": "bad"}) + "\n"
                             for i in range(10)))
    recipe = rm_recipe_from_dict({"train_data": str(pairs), "output_dir": str(tmp_path / "rm"), "epochs": 1})
    recipe = dataclasses.replace(recipe, device="meta")  # no recipe accepts meta; the trainer's path does
    record = dataclasses.asdict(recipe)
    with open_session(recipe.output_dir, record, resume=False, defaults=dataclasses.asdict(RewardModelRecipe()),
                      privacy=RunScrubber(recipe.scrub_pii)) as session:
        trainer = RewardModelTrainer(recipe, session, progress=False)
        assert _on(META, trainer.model) == []


def _one_step_under_mode(trainer) -> OneDeviceMode:
    learner = trainer.learner
    tag_modules(learner.policy, learner.value_head, learner.critic_trunk, trainer.reference,
                getattr(trainer.engine, "model", None))
    mode = OneDeviceMode()
    with mode:
        metrics, finite = trainer.step(0)
    assert finite and metrics["step"] == 1
    return mode


@pytest.mark.parametrize("overrides", [(), ("algorithm.name=ppo", "train.mini_batch_size=4",
                                            "algorithm.overlong_buffer=2", "algorithm.mask_truncated=true")],
                         ids=["grpo", "ppo-critic-dapo-masks"])
def test_an_rl_step_touches_tensors_on_one_device_only(tmp_path, overrides):
    session, trainer = _rl_trainer(tmp_path, torch.device("cpu"), "warm_start.steps=2", *overrides)
    with session:
        mode = _one_step_under_mode(trainer)
        assert mode.ops > 1000  # the whole step ran under the mode (sampling, scoring, update)
        assert mode.violations == [], mode.violations[0]
        mode = OneDeviceMode()  # and the held-out evaluation
        with mode:
            trainer.evaluate(1)
        assert mode.violations == [], mode.violations[0]


def test_the_device_mode_catches_a_tensor_made_without_a_device():
    mode = OneDeviceMode()
    weights = torch.ones(3)
    tag(weights)
    with mode:
        _ = weights + torch.tensor([1.0, 2.0, 3.0], device=weights.device)  # said where: fine
        _ = weights[torch.tensor([0, 2])]  # a CPU index: fine on CUDA too
        _ = weights * torch.tensor(2.0)  # a 0-dim CPU scalar: fine on CUDA too
        assert mode.violations == []
        _ = weights + torch.tensor([1.0, 2.0, 3.0])  # made on the default device: caught
    assert len(mode.violations) == 1 and mode.violations[0].startswith(("add", "__add__"))


def test_train_device_cpu_is_todays_default_bit_for_bit(tmp_path):
    from rlft.trainers.registry import train

    runs = {}
    for name, extra in (("default", []), ("cpu", ["train.device=cpu"])):
        config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / name}", "warm_start.steps=4",
                                       "warm_start.batch_size=8", *extra])
        train(config, progress=False)
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [{k: v for k, v in line.items() if not k.startswith(("perf/", "time"))} for line in lines]
    assert runs["default"] == runs["cpu"] and len(runs["cpu"]) == 2
    assert (tmp_path / "cpu" / "final_model" / "model.safetensors").read_bytes() == \
        (tmp_path / "default" / "final_model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "cuda0"])
def test_a_device_rlft_does_not_train_on_is_refused_at_load(spec):
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        config_from_dict({}, [f"train.device={spec}"])


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_asking_for_a_gpu_on_a_cpu_only_machine_is_one_clear_error(spec):
    with pytest.raises(ConfigError, match="sees no CUDA device.*train.device: cpu"):
        resolve_device(spec)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_checkpoint_saved_from_cuda_tensors_resumes_on_the_cpu(tmp_path, monkeypatch):
    """optimizer.pt written as a GPU run writes it: every storage tagged ``cuda:0`` (the real
    location tag of a CUDA tensor) and CUDA RNG states. Without map_location it cannot even be
    read on this machine; the run's resume path loads it."""
    from rlft.trainers.checkpoint import TrainerState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    expected = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.get_rng_state()])
    # Every storage torch.save writes is recorded as living on cuda:0.
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    path = save_checkpoint(tmp_path, model, {"optimizer": optimizer}, TrainerState(step=3), keep=2)
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path / "optimizer.pt", weights_only=False)  # what a load without map_location does here
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    state, _ = load_checkpoint(path, fresh, {"optimizer": fresh_opt})
    assert state.step == 3
    restored = fresh_opt.state_dict()["state"][0]
    assert all(torch.equal(restored[k].cpu(), v) for k, v in expected.items())
    assert torch.equal(fresh.weight, model.weight.detach())
    assert restored["exp_avg"].device.type == "cpu"


def test_a_bf16_model_trains_through_float32_master_weights_and_checkpoints_them(tmp_path):
    from rlft.common.optim import Float32MasterAdamW
    from rlft.trainers.registry import train

    config = config_from_dict({}, [*TINY, f"run_dir={tmp_path / 'run'}", "warm_start.steps=2", "model.dtype=bfloat16",
                                   "train.optimizer_dtype=float32", "checkpoint.every=1", "train.learning_rate=1e-3"])
    summary = train(config, progress=False)
    assert summary["steps"] == 2
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step_0000002" / "optimizer.pt", weights_only=False)
    masters = saved["optimizers"]["optimizer"]["master_weights"]
    assert masters and all(m.dtype == torch.float32 for m in masters)
    session, trainer = _rl_trainer(tmp_path / "again", torch.device("cpu"), "model.dtype=bfloat16",
                                   "train.optimizer_dtype=float32")
    with session:
        assert isinstance(trainer.optimizer, Float32MasterAdamW)
        assert trainer.learner.policy.dtype == torch.bfloat16


def test_a_run_resumes_on_another_device(tmp_path):
    """train.device is where a run trains, not what it learns: a run checkpointed with one device
    resumes with another (here cpu -> auto, both the CPU on this machine; cuda -> cpu is the GPU
    check's, benchmarks/gpu_check.py)."""
    from rlft.trainers.registry import train

    run = tmp_path / "run"
    first = config_from_dict({}, [*TINY, f"run_dir={run}", "warm_start.steps=2", "train.steps=1", "checkpoint.every=1",
                                  "train.device=cpu"])
    train(first, progress=False)
    again = config_from_dict({}, [*TINY, f"run_dir={run}", "warm_start.steps=2", "train.steps=2", "checkpoint.every=1",
                                  "train.device=auto"])
    assert train(again, resume=True, progress=False)["steps"] == 2


def test_every_recipe_refuses_a_device_it_cannot_train_on(tmp_path):
    from rlft.config.online import online_recipe_from_dict
    from rlft.config.reward_model import rm_recipe_from_dict

    with pytest.raises(ConfigError, match="device='tpu'.*auto, cpu, cuda or cuda:N"):
        load_agent_config(None, ["device=tpu"])
    with pytest.raises(ConfigError, match="device='cuda-1'.*auto, cpu, cuda or cuda:N"):
        rm_recipe_from_dict({"train_data": "pairs.jsonl", "device": "cuda-1"})
    with pytest.raises(ConfigError, match="device='gpu'.*auto, cpu, cuda or cuda:N"):
        online_recipe_from_dict({"model": str(tmp_path), "device": "gpu"})
