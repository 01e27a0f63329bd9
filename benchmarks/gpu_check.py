"""The GPU check: rlft's learner on CUDA is correct, resumes across devices, runs NCCL, and how fast
and how large it is beside TRL — one command, offline, under 8 minutes on one GPU.

Usage (repository root, on a machine with a CUDA GPU and rlft installed)::

    python benchmarks/gpu_check.py                 # everything this machine can run
    python benchmarks/gpu_check.py --quick         # 2 + 3 steps per configuration (a first look)
    python benchmarks/gpu_check.py --allow-cpu --quick   # the script's own smoke test, no GPU

Stages (each one's failure is recorded under ``errors`` and the others still run):

1. ``correct``: one fixed batch of completions (sampled once on the CPU) scored and trained for 3
   updates on CUDA and on the CPU from the same float32 weights: log-probs, losses and gradient
   norms within 1e-3 relative (max |a - b| / max |b|), weights within 1e-4 absolute;
2. ``resume``: a run trained and checkpointed on CUDA (``train.device: cuda``) resumed on the CPU
   (``train.device: cpu``) to its end, through ``rlft.train``;
3. ``nccl``: a 2-process ``torchrun`` run of ``rlft train`` when the machine has 2 GPUs, else one
   rank's NCCL group (``init_ranks`` on ``cuda:0``, an all-reduce of floats on the device);
4. ``configs``: speed and memory of rlft's real step (``rl_step``) on a Qwen2-shaped model of
   ~0.36B parameters (Qwen2.5-0.5B's layers and widths, a locally trained vocabulary of a few
   hundred tokens instead of 151k), built offline: ``fp32``, ``bf16_autocast``, ``bf16_weights``
   (with float32 master weights) and ``vllm_colocated`` (sleep mode on), each in its own process;
   median of the measured steps after the warm-up ones: ``step_s``, ``rollout_s``, ``update_s``,
   ``tokens_per_s``, ``cuda_peak_mib``, ``weight_sync_s``, ``sampler_logprob_gap``;
5. TRL's ``GRPOTrainer`` on the same model, prompts, batch, group size and lengths, bf16, with and
   without vLLM colocated, each in its own process: ``rlft_vs_trl_step_s`` and
   ``rlft_vs_trl_peak_mib`` (rlft's over TRL's: below 1 is better; targets 0.8 and 1.0).

vLLM and TRL are used only where they import; otherwise their entries say why they were skipped
(on a machine without network, carry their wheels). The last line printed is one JSON object with
``correct``, ``configs``, ``rlft_vs_trl_step_s``, ``rlft_vs_trl_peak_mib`` and ``gpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUP, BATCH, MAX_NEW, LR, BETA = 8, 64, 64, 1e-6, 0.04
SIZES = {  # Qwen2 shapes; the vocabulary is the locally trained tokenizer's
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
    "qwen0.5b": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864),
}
CONFIGS = {  # recipe overrides of each measured configuration
    "fp32": [],
    "bf16_autocast": ["train.autocast=bfloat16"],
    "bf16_weights": ["model.dtype=bfloat16", "train.optimizer_dtype=float32"],
    "vllm_colocated": ["rollout.backend=vllm", "train.autocast=bfloat16", "rollout.vllm.sleep=true",
                       "rollout.vllm.gpu_memory_utilization=0.3"],
}
TRL_CONFIGS = {"trl_bf16": False, "trl_bf16_vllm": True}  # name -> use vLLM colocated
PAIRS = {"trl_bf16": "bf16_autocast", "trl_bf16_vllm": "vllm_colocated"}  # TRL run -> rlft's like it
PROMPTS = [(f"{a}+{b}=", a + b) for a in range(50) for b in range(50)]


def prompts_64() -> list[tuple[str, int]]:
    return [PROMPTS[(i * 39) % len(PROMPTS)] for i in range(64)]


def reward(completion: str, answer: int) -> float:
    """1 for the right sum, 0.1 for another leading integer, 0 otherwise."""
    match = re.match(r"\s*(-?\d+)", completion)
    return 0.0 if match is None else 1.0 if int(match.group(1)) == answer else 0.1


def build_model(size: str, folder: Path) -> Path:
    from rlft.config import TinyModelConfig
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks import ArithmeticTask

    if not (folder / "config.json").exists():
        build_tiny_model(TinyModelConfig(**SIZES[size]), ArithmeticTask().corpus(2000), folder, seed=0)
    return folder


def relative(a, b) -> float:  # noqa: ANN001
    """max |a - b| / max |b| over two tensors (on the CPU)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


# ----------------------------------------------------------------------------------------------
# 1. The same batch, scored and trained on both devices.


def train_fixed_batch(model_dir: Path, device, rollout, rewards) -> dict:  # noqa: ANN001
    import torch

    from rlft.common.optim import adamw
    from rlft.config import config_from_dict
    from rlft.models.dropout import disable_dropout
    from rlft.models.loading import frozen_reference, load_policy
    from rlft.trainers.batch import build_learner, outcome_token_rewards, score_rollout
    from rlft.trainers.loop import update

    config = config_from_dict({}, [f"model.path={model_dir}", "algorithm.group_size=4", f"train.batch_size={len(rollout)}",
                                   "train.learning_rate=1e-3", "train.device=cpu"])
    policy, _ = load_policy(str(model_dir))
    disable_dropout(policy)
    policy.to(device)
    reference = frozen_reference(policy)
    learner = build_learner(config, policy)
    optimizer = adamw(learner.modules().parameters(), 1e-3)
    rollout, rewards = rollout.to(device), rewards.to(device)
    with torch.no_grad():
        logprobs = learner.score(rollout, 1.0)[0]
    batch = score_rollout(config.algorithm, learner, reference, rollout, rewards,
                          outcome_token_rewards(rewards, rollout.completion_mask), temperature=1.0,
                          kl_coef=BETA, reused=False)
    losses, grad_norms = [], []
    for i in range(3):
        metrics, finite = update(config, learner, optimizer, batch, torch.Generator().manual_seed(i), BETA)
        assert finite, "a non-finite update"
        losses.append(metrics["loss/total"])
        grad_norms.append(metrics["optim/grad_norm"])
    weights = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
    return {"logprobs": logprobs.cpu(), "losses": losses, "grad_norms": grad_norms, "weights": weights}


def check_correctness(model_dir: Path, device) -> dict:  # noqa: ANN001
    import torch

    from rlft.models.loading import load_policy
    from rlft.models.tokens import encode_prompts
    from rlft.rollout.sampling import sample

    policy, tokenizer = load_policy(str(model_dir))
    problems = [p for p, _ in prompts_64()[:4] for _ in range(4)]
    ids, mask = encode_prompts(tokenizer, problems)
    rollout = sample(policy, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=16, generator=torch.Generator().manual_seed(0))
    rewards = torch.linspace(0, 1, len(rollout))  # spread inside every group: non-zero advantages
    cpu = train_fixed_batch(model_dir, torch.device("cpu"), rollout, rewards)
    other = train_fixed_batch(model_dir, device, rollout, rewards)
    keep = rollout.completion_mask.bool()
    figures = {
        "logprob_rel": relative(other["logprobs"][keep], cpu["logprobs"][keep]),
        "loss_rel": max(relative(torch.tensor([a]), torch.tensor([b])) for a, b in zip(other["losses"], cpu["losses"], strict=True)),
        "grad_norm_rel": max(relative(torch.tensor([a]), torch.tensor([b]))
                             for a, b in zip(other["grad_norms"], cpu["grad_norms"], strict=True)),
        "weight_abs": max(float((other["weights"][k] - v).abs().max()) for k, v in cpu["weights"].items()),
        "losses_cpu": cpu["losses"], "losses_device": other["losses"],
    }
    figures["ok"] = (figures["logprob_rel"] <= 1e-3 and figures["loss_rel"] <= 1e-3 and figures["grad_norm_rel"] <= 1e-3
                     and figures["weight_abs"] <= 1e-4)
    return figures


# ----------------------------------------------------------------------------------------------
# 2. and 3. Resume on the CPU; NCCL.


def check_resume(device_name: str, workdir: Path) -> dict:
    from rlft.config import config_from_dict
    from rlft.trainers.registry import train

    run = workdir / "resume_run"
    common = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
              "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.batch_size=16",
              "algorithm.group_size=4", "rollout.max_new_tokens=4", "eval.every=2", "checkpoint.every=1",
              f"run_dir={run}"]
    train(config_from_dict({}, [*common, "train.steps=2", f"train.device={device_name}"]), progress=False)
    summary = train(config_from_dict({}, [*common, "train.steps=3", "train.device=cpu"]), resume=True, progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"ok": summary["steps"] == 3 and len(lines) == 3, "steps": summary["steps"],
            "cuda_metrics_logged": "perf/cuda_peak_mib" in lines[0]}


def check_nccl(workdir: Path, gpus: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if gpus >= 2:
        out = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "rlft.cli.main", "demo",
             "--no-progress", "--run-dir", str(workdir / "nccl_run"), "--set", "train.steps=2", "--set",
             "train.batch_size=16", "--set", "algorithm.group_size=4", "--set", "warm_start.steps=4", "--set",
             "task.eval_size=8", "--set", "rollout.max_new_tokens=8", "--set", "train.device=cuda"],
            capture_output=True, text=True, timeout=300, env=env)
        return {"ok": out.returncode == 0, "mode": "torchrun 2 processes", "tail": out.stderr[-1500:]}
    out = subprocess.run([sys.executable, __file__, "--worker", "nccl1"], capture_output=True, text=True,
                         timeout=120, env={**env, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    result = last_json(out.stdout) or {"ok": False}
    return {**result, "mode": "1-rank NCCL", **({"tail": out.stderr[-1500:]} if out.returncode else {})}


def nccl_worker() -> dict:
    import torch

    from rlft.trainers.parallel import init_ranks

    ranks = init_ranks("ddp", torch.device("cuda", 0))
    import torch.distributed as dist

    backend = dist.get_backend()
    summed = ranks.sum_floats({"a": 1.5, "b": 2.0})
    x = torch.ones(4, device="cuda")
    dist.all_reduce(x)
    ranks.barrier()
    ranks.close()
    return {"ok": backend == "nccl" and summed == {"a": 1.5, "b": 2.0} and bool((x == 1).all()), "backend": backend}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# 4. and 5. Speed and memory, each configuration in its own process.


def rlft_config_worker(model_dir: str, name: str, device_name: str, warmup: int, steps: int) -> dict:
    import torch

    from rlft.common.optim import adamw
    from rlft.config import config_from_dict
    from rlft.models.device import move_model, resolve_device
    from rlft.models.loading import load_policy
    from rlft.rollout.engine import build_rollout_engine
    from rlft.tasks import Problem
    from rlft.trainers import loop

    class SumTask:
        problems = [Problem(prompt=p, answer=str(a)) for p, a in prompts_64()]

        def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
            return [self.problems[int(i)] for i in torch.randint(0, len(self.problems), (n,), generator=gen)]

        def reward(self, completions: list[str], problems: list[Problem]) -> list[float]:
            return [reward(c, int(p.answer)) for c, p in zip(completions, problems, strict=True)]

    config = config_from_dict({}, [
        f"model.path={model_dir}", f"algorithm.group_size={GROUP}", f"algorithm.kl_coef={BETA}",
        f"train.batch_size={BATCH}", f"train.learning_rate={LR}", f"rollout.max_new_tokens={MAX_NEW}",
        f"train.device={device_name}", *CONFIGS[name],
    ])
    device = resolve_device(config.train.device)
    policy, tokenizer = load_policy(model_dir, config.model.dtype)  # the RL trainer's order:
    move_model(policy, device)  # the device first, then the reference, engine, learner, optimiser
    policy, reference = loop.prepare_policy_and_reference(config, policy)
    engine = build_rollout_engine(config, policy)
    learner = loop.build_learner(config, policy)
    optimizer = adamw(learner.modules().parameters(), LR, float32_master=config.train.optimizer_dtype == "float32")
    task = SumTask()
    reward_fn = loop.make_reward_fn(config, task)
    rows = []
    for step in range(warmup + steps):
        metrics, _ = loop.rl_step(config, learner, reference, tokenizer, optimizer, task, step, BETA, reward_fn, engine)
        if step >= warmup:
            rows.append(metrics)

    def median(key: str) -> float | None:
        values = [m[key] for m in rows if isinstance(m.get(key), (int, float))]
        return round(statistics.median(values), 4) if values else None

    out = {"step_s": median("perf/step_seconds"), "rollout_s": median("perf/rollout_seconds"),
           "tokens_per_s": median("perf/tokens_per_s"), "weight_sync_s": median("perf/weight_sync_s"),
           "sampler_logprob_gap": median("rollout/sampler_logprob_gap"),
           "reward_mean": median("reward/mean"), "steps": len(rows)}
    out["update_s"] = round(out["step_s"] - out["rollout_s"], 4) if out["step_s"] is not None else None
    peaks = [m["perf/cuda_peak_mib"] for m in rows if "perf/cuda_peak_mib" in m]
    out["cuda_peak_mib"] = round(max(peaks), 1) if peaks else None
    return out


def trl_worker(model_dir: str, use_vllm: bool, warmup: int, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []
    peaks: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.started)
            peaks.append(torch.cuda.max_memory_allocated() / 2**20)
            if len(times) >= warmup + steps:
                control.should_training_stop = True

    def reward_func(completions, answer, **kwargs):  # noqa: ANN001, ANN003
        return [reward(c, a) for c, a in zip(completions, answer, strict=True)]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    extra = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
             "vllm_enable_sleep_mode": True} if use_vllm else {}
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_gpu_"), per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1, num_generations=GROUP, max_completion_length=MAX_NEW, temperature=1.0,
        learning_rate=LR, beta=BETA, loss_type="dapo", max_steps=warmup + steps, lr_scheduler_type="constant",
        gradient_checkpointing=False, bf16=True, report_to="none", save_strategy="no", logging_steps=10_000,
        disable_tqdm=True, seed=0, **extra,
    )
    rows = [{"prompt": p, "answer": a} for p, a in prompts_64()]
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=args, train_dataset=Dataset.from_list(rows * 20),
                          processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    return {"step_s": round(statistics.median(times[warmup:]), 4), "cuda_peak_mib": round(max(peaks[warmup:]), 1),
            "steps": len(times) - warmup}


def run_worker(args: list[str], timeout: int) -> dict:
    """A worker process's JSON answer, or {"error": ...} with the end of its output."""
    try:
        out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    result = last_json(out.stdout)
    if out.returncode or result is None:
        return {"error": (out.stderr or out.stdout)[-1500:]}
    return result


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def importable(name: str) -> str | None:
    """None when ``name`` imports, else why not."""
    try:
        __import__(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip
        return f"{name} does not import here ({type(exc).__name__}: {str(exc)[:120]}); carry its wheels"
    return None


# ----------------------------------------------------------------------------------------------


def stage(report: dict, name: str, fn, *args):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    try:
        result = fn(*args)
    except Exception:  # noqa: BLE001 - a failing stage is recorded; the others still run
        report["errors"][name] = traceback.format_exc()[-2000:]
        result = None
    print(f"[{name}] {time.perf_counter() - started:.1f} s: {json.dumps(result, default=str)[:400]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 warm-up + 3 measured steps (default 2 + 10)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible (smoke test)")
    parser.add_argument("--size", default=None, help="model of the speed stages: tiny or qwen0.5b (default: "
                        "qwen0.5b on a GPU, tiny on the CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "nccl1":
        return print(json.dumps(nccl_worker()))
    if args.worker in CONFIGS:
        return print(json.dumps(rlft_config_worker(args.model, args.worker, args.device, args.warmup, args.steps)))
    if args.worker in TRL_CONFIGS:
        return print(json.dumps(trl_worker(args.model, TRL_CONFIGS[args.worker], args.warmup, args.steps)))

    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = torch.cuda.is_available()
    report: dict = {"gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
                    "transformers": transformers.__version__, "gpus": torch.cuda.device_count() if cuda else 0,
                    "correct": None, "configs": {}, "trl": {}, "rlft_vs_trl_step_s": None,
                    "rlft_vs_trl_peak_mib": None, "errors": {}, "skipped": {}}
    if not cuda and not args.allow_cpu:
        report["skipped"]["all"] = "no CUDA device is visible (torch.cuda.is_available() is False); --allow-cpu runs the smoke test"
        return print(json.dumps(report))
    device_name = "cuda" if cuda else "cpu"
    warmup, steps = (2, 3) if args.quick else (args.warmup, args.steps)
    workdir = Path(tempfile.mkdtemp(prefix="rlft_gpu_check_"))
    tiny = build_model("tiny", workdir / "tiny")
    correctness = stage(report, "correct", check_correctness, tiny, torch.device(device_name))
    resume = stage(report, "resume", check_resume, device_name, workdir)
    nccl = stage(report, "nccl", check_nccl, workdir, report["gpus"]) if cuda else None
    report.update({"correctness": correctness, "resume": resume, "nccl": nccl})
    report["correct"] = bool(correctness and correctness["ok"] and resume and resume["ok"] and (nccl or {"ok": not cuda})["ok"])
    size = args.size or ("qwen0.5b" if cuda else "tiny")
    model = stage(report, "build_model", build_model, size, workdir / size)
    report["model"] = size
    skips = {"vllm_colocated": importable("vllm") if cuda else "needs a GPU"}
    for name in CONFIGS:
        if skips.get(name):
            report["skipped"][name] = skips[name]
            continue
        worker = ["--worker", name, "--model", str(model), "--device", device_name, "--warmup", str(warmup), "--steps", str(steps)]
        report["configs"][name] = stage(report, name, run_worker, worker, 600)
    trl_missing = importable("trl") if cuda else "TRL's side runs on a GPU only here"
    for name, use_vllm in TRL_CONFIGS.items():
        reason = trl_missing or (skips["vllm_colocated"] if use_vllm else None)
        if reason:
            report["skipped"][name] = reason
            continue
        worker = ["--worker", name, "--model", str(model), "--warmup", str(warmup), "--steps", str(steps)]
        report["trl"][name] = stage(report, name, run_worker, worker, 600)
    ratios_step, ratios_peak = {}, {}
    for trl_name, rlft_name in PAIRS.items():
        ours, theirs = report["configs"].get(rlft_name) or {}, report["trl"].get(trl_name) or {}
        if ours.get("step_s") and theirs.get("step_s"):
            ratios_step[trl_name] = round(ours["step_s"] / theirs["step_s"], 3)
            ratios_peak[trl_name] = round(ours["cuda_peak_mib"] / theirs["cuda_peak_mib"], 3)
    report["rlft_vs_trl_step_s"] = ratios_step or None
    report["rlft_vs_trl_peak_mib"] = ratios_peak or None
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
