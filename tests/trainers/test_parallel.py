"""Several learner processes (torchrun, ``rlft train --nproc 2``, gloo on the CPU): the update of
2 ranks is the update of one process on the whole batch, a killed 2-rank run resumes to the
uninterrupted one, a 2-rank checkpoint resumes on 1 process, and only rank 0 writes the run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlft.config import config_from_dict
from rlft.errors import ConfigError
from rlft.trainers.parallel import Ranks, check_parallel_recipe

# One-digit sums, a reward with variance from the first step (a "1" anywhere), 4 ranks' worth of
# whole groups, 2 micro-batches per rank and mini-batch.
RECIPE = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "warm_start.steps=5", "warm_start.batch_size=16", "task.digits=1", "task.eval_size=16",
    "train.batch_size=16", "train.micro_batch_size=4", "algorithm.group_size=4", "rollout.max_new_tokens=4",
    "eval.every=2", "checkpoint.every=1", "train.torch_threads=1", 'reward={"type": "regex", "pattern": "1"}',
]  # fmt: skip


def command(run: Path, *sets: str, nproc: int = 1, resume: bool = False) -> list[str]:
    """``rlft demo`` (the embedded recipe) as a user types it; ``--nproc 2`` starts torchrun."""
    args = [sys.executable, "-m", "rlft", "demo", "--no-progress", "--run-dir", str(run), "--nproc", str(nproc)]
    for item in [*RECIPE, *sets]:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def rlft_train(run: Path, *sets: str, nproc: int = 1, resume: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(command(run, *sets, nproc=nproc, resume=resume), capture_output=True, text=True,
                          timeout=300, env=ENV)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final_model" / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")} for line in lines]


# PPO: a value head, old log-probs and values from a no-grad pass, 2 epochs of 2 mini-batches.
PPO = ("algorithm.name=ppo", "train.epochs_per_batch=2", "train.mini_batch_size=8")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("parallel") / "one"
    done = rlft_train(run, "train.steps=2")
    assert done.returncode == 0, done.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def one_process_ppo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("parallel") / "one_ppo"
    done = rlft_train(run, "train.steps=2", *PPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("parallel, algorithm", [("ddp", "grpo"), ("fsdp", "grpo"), ("fsdp", "ppo")])
def test_two_ranks_update_like_one_process_on_the_whole_batch(tmp_path, request, parallel, algorithm):
    one_process = request.getfixturevalue("one_process_ppo" if algorithm == "ppo" else "one_process")
    run = tmp_path / parallel
    extra = PPO if algorithm == "ppo" else ()
    done = rlft_train(run, "train.steps=2", f"train.parallel={parallel}", *extra, nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    base = load_file(str(one_process / "base_model" / "model.safetensors"))
    moved = max_diff(weights(one_process), base)
    assert moved > 1e-4  # the steps changed the weights, so equal weights say something
    assert max_diff(weights(run), weights(one_process)) < 1e-5  # float rounding, 100x below the update
    for ours, theirs in zip(metrics(run), metrics(one_process), strict=True):
        assert ours["reward/mean"] == theirs["reward/mean"]  # the union of the shares is the batch
        assert ours["optim/grad_norm"] == pytest.approx(theirs["optim/grad_norm"], rel=1e-4)
        assert ours["loss/total"] == pytest.approx(theirs["loss/total"], rel=1e-4, abs=1e-7)
        assert ours["loss/value"] == pytest.approx(theirs["loss/value"], rel=1e-4, abs=1e-7)
    # Rank 0 alone writes: each step and evaluation once, the audit chain intact.
    assert [m["step"] for m in metrics(run)] == [1, 2]
    assert len((run / "evals.jsonl").read_text().splitlines()) == 1
    assert subprocess.run([sys.executable, "-m", "rlft", "audit", "verify", str(run)]).returncode == 0
    assert not list((run / "checkpoints").glob(".*.tmp"))
    if parallel == "fsdp":  # sharded checkpoints: one shard file per rank and DCP's index
        assert len(list((run / "checkpoints" / "step_0000002").glob("*.distcp"))) == 2


def _kill_everything_of(run: Path) -> None:
    """SIGKILL torchrun and every rank (its workers need not share its process group)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and str(run) in cmdline and int(proc.name) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = rlft_train(whole, "train.steps=12", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    started = subprocess.Popen(command(killed, "train.steps=12", nproc=2), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_0000003").exists() and time.time() < deadline:
        time.sleep(0.02)
    _kill_everything_of(killed)
    started.wait(timeout=60)
    assert not (killed / "summary.json").exists(), "the run ended before it could be killed"
    resumed = rlft_train(killed, "train.steps=12", nproc=2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(killed) == metrics(whole)
    assert max_diff(weights(killed), weights(whole)) == 0.0


@pytest.mark.slow
def test_a_two_rank_sharded_checkpoint_resumes_on_one_process(tmp_path, one_process):
    run = tmp_path / "fsdp"
    done = rlft_train(run, "train.steps=1", "train.parallel=fsdp", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    done = rlft_train(run, "train.steps=2", "train.parallel=fsdp", resume=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # Step 1 on two ranks, step 2 on one process: the two steps one process takes.
    assert max_diff(weights(run), weights(one_process)) < 1e-5
    assert [m["step"] for m in metrics(run)] == [1, 2]


def test_a_batch_that_does_not_split_into_whole_groups_is_refused_with_the_fix():
    two = Ranks(rank=0, world=2, mode="ddp")
    config = config_from_dict({}, ["train.batch_size=12", "algorithm.group_size=4"])
    with pytest.raises(ConfigError, match="multiple of ranks x algorithm.group_size = 8"):
        check_parallel_recipe(config, two)
    config = config_from_dict({}, ["train.batch_size=16", "algorithm.group_size=4", "train.micro_batch_size=16"])
    with pytest.raises(ConfigError, match="micro_batch_size"):
        check_parallel_recipe(config, two)
    check_parallel_recipe(config, Ranks())  # one process: nothing to split


def test_fsdp_with_lora_is_refused_and_ddp_is_named():
    config = config_from_dict({}, ["lora.r=4", "train.parallel=fsdp", "train.batch_size=16", "train.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="train.parallel: ddp"):
        check_parallel_recipe(config, Ranks(rank=1, world=2, mode="fsdp"))


@pytest.fixture
def ray_cluster():
    """A Ray cluster on this machine, as `ray start --head` makes one for `distributed.address: auto`."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
    started = subprocess.run([ray_cli, "start", "--head", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    yield
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_rollout_workers_feed_a_two_rank_learner(tmp_path, one_process, ray_cluster):
    run = tmp_path / "ray_ddp"
    done = rlft_train(run, "train.steps=2", "distributed.engine=ray", "distributed.rollout_workers=1",
                      "distributed.address=auto", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    # Each rank's worker samples that rank's rows with the whole batch's noise: the one-process batch.
    for ours, theirs in zip(metrics(run), metrics(one_process), strict=True):
        assert ours["reward/mean"] == theirs["reward/mean"]
        assert ours["distributed/weights_version"] == ours["step"] + 1  # weights pushed after each update
    assert max_diff(weights(run), weights(one_process)) < 1e-5


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda:1", "nccl")])
def test_init_ranks_picks_nccl_for_a_gpu_and_gloo_for_the_cpu(monkeypatch, device, backend):
    """The process-group call is recorded, not run: NCCL with the rank's GPU (set first, so that the
    object collectives use it) on CUDA, gloo on the CPU, and a one-dimensional mesh over the ranks."""
    import torch.distributed as dist
    import torch.distributed.device_mesh as device_mesh

    from rlft.trainers import parallel

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend, kw)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(device_mesh, "init_device_mesh", lambda kind, shape: calls.append(("mesh", kind, shape)) or "MESH")
    ranks = parallel.init_ranks("fsdp", torch.device(device))
    expected = [("init", backend, {"device_id": torch.device(device)} if backend == "nccl" else {}),
                ("mesh", torch.device(device).type, (2,))]
    if backend == "nccl":
        expected.insert(0, ("set_device", torch.device(device)))
    assert calls == expected
    assert (ranks.rank, ranks.world, ranks.mode, ranks.device, ranks.mesh) == (1, 2, "fsdp", torch.device(device), "MESH")


def test_fsdp_mixed_precision_is_bf16_params_and_float32_reduce_on_a_gpu_only():
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from rlft.trainers.parallel import mixed_precision_policy

    policy = mixed_precision_policy(torch.bfloat16, torch.device("cuda", 0))
    assert isinstance(policy, MixedPrecisionPolicy)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision_policy(torch.bfloat16, torch.device("cpu")) is None
    assert mixed_precision_policy(None, torch.device("cuda", 0)) is None
