"""rlft against TRL's GRPOTrainer on the same model, prompts and RL work, in one run.

Usage (from the repository root, with rlft's virtual environment)::

    .venv/bin/python benchmarks/throughput_vs_trl.py                      # tiny model, 12 steps
    .venv/bin/python benchmarks/throughput_vs_trl.py --sizes tiny,100m --steps 3 --warmup 1
    .venv/bin/python benchmarks/throughput_vs_trl.py --bf16-rollouts   # also rlft with bf16 sampling
    .venv/bin/python benchmarks/throughput_vs_trl.py --mixed-precision # and with bf16 autocast too

``--bf16-rollouts`` adds a worker running rlft with ``rollout.dtype: bfloat16`` (bf16 sampler and
reference, float32 learner) and ``--mixed-precision`` one that also sets ``train.autocast:
bfloat16``, together with TRL run with ``bf16=True`` (its mixed precision). The ratios to TRL's
fp32 run are printed as ``bf16_speedup`` and ``mixed_speedup`` beside the fp32 ``speedup``, and
mixed against mixed as ``mixed_vs_trl_bf16_speedup``.

TRL lives in its own virtual environment, ``benchmarks/.venv-trl``, which the script creates on
first use (``pip install torch==2.13.0 trl==1.16.0 transformers==<rlft's version>``; the torch pin
keeps pip from pulling CUDA wheels). Each library runs in its own worker process, so each one's
peak memory (RSS) is its own; the parent sends "step" to one worker, then the other, alternating
which goes first, and takes medians, because this machine's speed drifts.

The workload (identical for both): a Qwen2 model built locally with rlft's byte-level BPE
tokenizer, randomly initialised, fp32; 64 prompts ``a+b=`` with a, b in 0..49; 8 completions per
prompt, 32 completions per optimiser step, up to 32 new tokens, temperature 1; reward 1 for the
right sum, 0.1 for another leading integer, 0 otherwise; GRPO with k3 KL to a frozen reference
(beta 0.04) in the loss, token-mean loss; AdamW lr 1e-5; 2 torch threads. TRL's gradient
checkpointing (on by default in TRL 1.16) is turned off, since rlft does not use it here.

rlft's side is the real loop: ``rlft.trainers.loop.rl_step`` with a task object that provides
``train_problems`` and ``reward``. The last line printed is one JSON object with, per size,
``rlft_step_s``, ``trl_step_s``, ``speedup``, ``rlft_peak_mib``, ``trl_peak_mib`` and more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / "benchmarks" / ".venv-trl"
TRL_VERSION = "1.16.0"
THREADS = 2
GROUP, BATCH, MAX_NEW, LR, BETA = 8, 32, 32, 1e-5, 0.04

SIZES = {  # Qwen2 shapes; vocabulary from the locally trained tokenizer (320)
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=768),
    "100m": dict(hidden_size=768, num_layers=16, num_heads=12, num_kv_heads=4, intermediate_size=2048),
}
PROMPTS = [(f"{a}+{b}=", a + b) for a in range(50) for b in range(50)]


def prompts_64() -> list[tuple[str, int]]:
    """64 fixed problems spread over the 50 x 50 grid (every 39th, a deterministic choice)."""
    return [PROMPTS[(i * 39) % len(PROMPTS)] for i in range(64)]


def reward(completion: str, answer: int) -> float:
    """1 for the right sum, 0.1 for another leading integer, 0 otherwise."""
    match = re.match(r"\s*(-?\d+)", completion)
    if match is None:
        return 0.0
    return 1.0 if int(match.group(1)) == answer else 0.1


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def report_line(seconds: float, tokens: float) -> str:
    import torch

    return json.dumps({"seconds": seconds, "tokens": tokens, "peak_mib": peak_rss_mib(),
                       "threads": torch.get_num_threads()}) + "\n"


# ----------------------------------------------------------------------------------------------
# Workers: read "step" lines on stdin, answer one JSON line per optimiser step.


def _serve(run_step) -> None:  # noqa: ANN001
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    for line in sys.stdin:
        if line.strip() != "step":
            break
        seconds, tokens = run_step()
        out.write(report_line(seconds, tokens))
        out.flush()


# rlft's workers: recipe settings beyond the shared workload.
RLFT_VARIANTS = {
    "rlft": [],
    "rlft_bf16": ["rollout.dtype=bfloat16"],  # bf16 sampler and reference, float32 learner
    "rlft_mixed": ["rollout.dtype=bfloat16", "train.autocast=bfloat16"],  # and bf16 autocast in the update
}


def rlft_worker(model_dir: str, variant: str = "rlft") -> None:
    import torch

    from rlft.common.optim import adamw
    from rlft.config import config_from_dict
    from rlft.models.loading import load_policy
    from rlft.rollout.engine import build_rollout_engine
    from rlft.tasks import Problem
    from rlft.trainers import loop
    from rlft.trainers.loop import (
        build_learner,
        prepare_policy_and_reference,
        rl_step,
    )

    torch.set_num_threads(THREADS)

    class SumTask:
        """The benchmark's 64 prompts with the graded reward."""

        def __init__(self) -> None:
            self.problems = [Problem(prompt=p, answer=str(a)) for p, a in prompts_64()]

        def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
            return [self.problems[int(i)] for i in torch.randint(0, len(self.problems), (n,), generator=gen)]

        def reward(self, completions: list[str], problems: list[Problem]) -> list[float]:
            return [reward(c, int(p.answer)) for c, p in zip(completions, problems, strict=True)]

    config = config_from_dict({}, [
        f"model.path={model_dir}", "algorithm.name=grpo", f"algorithm.group_size={GROUP}",
        f"algorithm.kl_coef={BETA}", f"train.batch_size={BATCH}", f"train.learning_rate={LR}",
        f"rollout.max_new_tokens={MAX_NEW}", "rollout.temperature=1.0", f"train.torch_threads={THREADS}",
        *RLFT_VARIANTS[variant],
    ])
    policy, tokenizer = load_policy(model_dir)
    policy, reference = prepare_policy_and_reference(config, policy)  # as the loop does
    engine = build_rollout_engine(config, policy)  # the local sampler, or the bf16 one
    learner = build_learner(config, policy)
    optimizer = adamw(learner.modules().parameters(), LR)  # the loop's optimiser (fused AdamW)
    task = SumTask()
    reward_fn = loop.make_reward_fn(config, task)  # the task's reward, as the loop builds it
    step = 0

    def run_step() -> tuple[float, float]:
        nonlocal step
        started = time.perf_counter()
        metrics, _ = rl_step(config, learner, reference, tokenizer, optimizer, task, step, BETA, reward_fn, engine)
        seconds = time.perf_counter() - started
        step += 1
        return seconds, metrics["completions/mean_length"] * BATCH

    _serve(run_step)


def trl_worker(model_dir: str, bf16: bool = False) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(THREADS)
    tokens = [0.0]

    def reward_func(completions, answer, completion_ids, **kwargs):  # noqa: ANN001, ANN003
        tokens[0] += sum(len(ids) for ids in completion_ids)
        return [reward(c, a) for c, a in zip(completions, answer, strict=True)]

    class Stepper(TrainerCallback):
        """Waits for the parent before each optimiser step and reports after it."""

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            line = sys.stdin.readline()
            if line.strip() != "step":
                control.should_training_stop = True
            tokens[0] = 0.0
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
            seconds = time.perf_counter() - self.started
            protocol.write(report_line(seconds, tokens[0]))
            protocol.flush()

    protocol = sys.stdout
    sys.stdout = sys.stderr
    rows = [{"prompt": p, "answer": a} for p, a in prompts_64()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = tempfile.mkdtemp(prefix="trl_bench_")
    args = GRPOConfig(
        output_dir=out, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        num_generations=GROUP, max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0,
        learning_rate=LR, beta=BETA, loss_type="dapo", scale_rewards="group", max_steps=10_000,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        gradient_checkpointing=False, use_cpu=True, bf16=bf16, fp16=False, report_to="none",
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=args,
                          train_dataset=Dataset.from_list(rows * 100), processing_class=tokenizer,
                          callbacks=[Stepper()])
    trainer.train()


# ----------------------------------------------------------------------------------------------
# Parent: build the model, start the workers, alternate steps, report.


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if python.exists():
        return python
    import transformers

    print(f"Creating {TRL_VENV} with trl=={TRL_VERSION} (one time) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    (TRL_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", f"trl=={TRL_VERSION}",
                    f"transformers=={transformers.__version__}", "datasets"], check=True)
    return python


def build_model(size: str, folder: Path) -> Path:
    from rlft.config import TinyModelConfig
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks import ArithmeticTask

    if not (folder / "config.json").exists():
        build_tiny_model(TinyModelConfig(**SIZES[size]), ArithmeticTask().corpus(2000), folder, seed=0)
    return folder


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    import torch

    torch.set_num_threads(THREADS)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_flops(model_dir: Path, gen_tokens: float) -> float:
    """Model FLOPs of one step's RL work: sampling, one reference forward, one forward+backward.

    2N per token for a forward, 6N for forward+backward (N = parameters used per token, the tied
    embedding counted once, as the output projection); attention is ignored (short sequences).
    """
    cfg = json.loads((model_dir / "config.json").read_text())
    h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    n = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + h * vocab
    prompt_tokens = BATCH * 6  # "ab+cd=" is at most 6 tokens
    sequence_tokens = prompt_tokens + gen_tokens
    return 2 * n * sequence_tokens + 2 * n * sequence_tokens + 6 * n * sequence_tokens


class Worker:
    def __init__(self, name: str, python: Path, model_dir: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self.name = name
        self.log = open(tempfile.mkstemp(prefix=f"bench_{name}_", suffix=".log")[1], "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(python), __file__, "--worker", name, "--model", str(model_dir), "--threads", str(THREADS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )

    def step(self) -> dict[str, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_size(size: str, steps: int, warmup: int, trl_python: Path, workdir: Path, peak: float,
               variants: tuple[str, ...] = ()) -> dict:
    model_dir = build_model(size, workdir / f"model_{size}")
    workers = {"rlft": Worker("rlft", Path(sys.executable), model_dir), "trl": Worker("trl", trl_python, model_dir)}
    for name in variants:
        workers[name] = Worker(name, trl_python if name.startswith("trl") else Path(sys.executable), model_dir)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in workers}
    try:
        for i in range(warmup + steps):
            order = list(workers) if i % 2 == 0 else list(reversed(workers))
            for name in order:
                r = workers[name].step()
                if i >= warmup:
                    results[name].append(r)
                print(f"  [{size}] step {i + 1}/{warmup + steps} {name:9s} {r['seconds']:.3f} s"
                      f" ({r['tokens']:.0f} tokens, {r['threads']} threads)"
                      f"{' (warm-up)' if i < warmup else ''}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    out: dict[str, float] = {}
    for name, rs in results.items():
        step_s = statistics.median(r["seconds"] for r in rs)
        tokens = statistics.median(r["tokens"] for r in rs)
        out[f"{name}_step_s"] = round(step_s, 4)
        out[f"{name}_tokens_per_s"] = round(statistics.median(r["tokens"] / r["seconds"] for r in rs), 1)
        out[f"{name}_peak_mib"] = round(max(r["peak_mib"] for r in rs), 1)
        out[f"{name}_peak_fraction"] = round(step_flops(model_dir, tokens) / step_s / 1e9 / peak, 3)
    out["speedup"] = round(out["trl_step_s"] / out["rlft_step_s"], 2)
    for name in variants:  # not the same precision as TRL's fp32 run: reported beside, not instead
        if name.startswith("rlft_"):
            out[f"{name.removeprefix('rlft_')}_speedup"] = round(out["trl_step_s"] / out[f"{name}_step_s"], 2)
    if "trl_bf16_step_s" in out:  # mixed precision on both sides
        out["mixed_vs_trl_bf16_speedup"] = round(out["trl_bf16_step_s"] / out["rlft_mixed_step_s"], 2)
    cfg = json.loads((model_dir / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        out["params"] = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    out["hidden_size"] = cfg["hidden_size"]
    out["steps"] = steps
    return out


def _prod(shape: list[int]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny", help="comma-separated: tiny, 100m")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per library")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per library first")
    parser.add_argument("--workdir", default=None, help="where the models are built (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads of each library (2 is the reference workload)")
    parser.add_argument("--bf16-rollouts", action="store_true",
                        help="also run rlft with rollout.dtype=bfloat16 (bf16 sampler and reference)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="also run rlft with bf16 rollouts and train.autocast=bfloat16, and TRL with bf16=True")
    parser.add_argument("--worker", choices=[*RLFT_VARIANTS, "trl", "trl_bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    if args.worker in RLFT_VARIANTS:
        return rlft_worker(args.model, args.worker)
    if args.worker in ("trl", "trl_bf16"):
        return trl_worker(args.model, bf16=args.worker == "trl_bf16")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trl_python = ensure_trl_venv()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rlft_vs_trl_"))
    workdir.mkdir(parents=True, exist_ok=True)
    peak = matmul_gflops()
    print(f"fp32 matmul (1024^3, {THREADS} threads): {peak:.1f} GFLOP/s")
    report: dict[str, dict] = {}
    for size in args.sizes.split(","):
        variants = ("rlft_bf16",) * args.bf16_rollouts + ("rlft_mixed", "trl_bf16") * args.mixed_precision
        report[size] = bench_size(size, args.steps, args.warmup, trl_python, workdir, peak, variants)
    print()
    print(f"{'size':6s} {'params':>10s} {'lib':9s} {'s/step':>8s} {'tok/s':>8s} {'peak MiB':>9s} {'of peak':>8s}")
    for size, r in report.items():
        for name in [n for n in (*RLFT_VARIANTS, "trl", "trl_bf16") if n + "_step_s" in r]:
            print(f"{size:6s} {r['params']:>10,d} {name:9s} {r[name + '_step_s']:8.3f} "
                  f"{r[name + '_tokens_per_s']:8.1f} {r[name + '_peak_mib']:9.1f} {r[name + '_peak_fraction']:8.1%}")
        print(f"{size:6s} speedup rlft over TRL: {r['speedup']:.2f}x")
        for name in RLFT_VARIANTS:
            if f"{name.removeprefix('rlft_')}_speedup" in r and name != "rlft":
                print(f"{size:6s} speedup {name} over TRL (fp32): {r[name.removeprefix('rlft_') + '_speedup']:.2f}x")
        if "mixed_vs_trl_bf16_speedup" in r:
            print(f"{size:6s} speedup rlft_mixed over TRL bf16: {r['mixed_vs_trl_bf16_speedup']:.2f}x")
    report["matmul_gflops"] = round(peak, 1)  # type: ignore[assignment]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
