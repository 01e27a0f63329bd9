"""Learning side by side: rlft's default GRPO recipe against TRL's GRPOTrainer, from the same base.

Usage (from the repository root, with rlft's virtual environment; not in CI)::

    .venv/bin/python benchmarks/learning_vs_trl.py                       # both tasks, 3 seeds, 50 steps
    .venv/bin/python benchmarks/learning_vs_trl.py --tasks arithmetic --seeds 0 --steps 4 --eval-every 2 \\
        --set warm_start.steps=20 --out /tmp/lvt                         # a smoke run

Per task (``arithmetic``: examples/demo.yaml, what ``rlft demo`` runs; ``multistep``:
examples/multistep/recipe.yaml):

1. the base, once: the recipe run with ``train.steps=0``, so rlft's own warm start writes
   ``RUN/base_model/`` (as benchmarks/sparse_rewards.py does). Both libraries start from that folder.
2. per seed, rlft: ``rlft train`` of the recipe from the base (``warm_start.steps=0``), a
   checkpoint every ``--eval-every`` steps.
3. per seed, TRL: ``GRPOTrainer`` in a worker process under TRL's own virtual environment
   (``benchmarks/.venv-trl``, made by ``ensure_trl_venv()`` of benchmarks/throughput_vs_trl.py),
   saving the model every ``--eval-every`` steps. Its reward function is the task's own
   ``reward()`` (the worker imports rlft's task from src/), its prompts the task's training
   problems drawn with the seed, answers passed through the dataset.
4. one evaluator for both: every saved model is scored in this process with rlft's held-out
   evaluation (``evaluate_policy``, what ``eval/accuracy`` and base_eval.json report: greedy
   decoding of the task's held-out problems, the task's reward).

Settings aligned with rlft's resolved recipe (read from it in the TRL worker, so ``--set``
changes both): the base model and tokenizer; the prompts (the task's training problems, the
same text and token ids: the tokenizer adds no BOS); completions per optimiser step
(``per_device_train_batch_size`` = ``train.batch_size``, ``gradient_accumulation_steps`` 1);
group size (``num_generations`` = ``algorithm.group_size``); ``max_completion_length`` =
``rollout.max_new_tokens``; ``temperature`` and ``top_p``; the KL coefficient (``beta`` =
``algorithm.kl_coef``, 0.04); ``learning_rate`` (1e-4); ``max_steps`` = ``--steps``; the seed.
And what a fair comparison needs besides: ``gradient_checkpointing=False`` (on by default in
TRL 1.16; rlft does not use it here, as in throughput_vs_trl.py), ``bf16=False`` (TRL's default
is bf16 autocast; rlft's recipe trains in float32), ``use_cpu=True``, the same torch threads
(``--threads``, default 1: on 2 cores busy with other jobs two threads per process made sampling
several times slower, as docs/learning.md's code benchmark found).
Everything else is TRL's default, among them: loss_type ``dapo`` (token mean over the batch,
as rlft's ``token_mean``), ``scale_rewards="group"``, epsilon 0.2, one update per batch, AdamW
(fused), weight decay 0, grad-norm clip 1.0, and a *linear* learning-rate decay to 0 over
``max_steps`` (rlft's recipe keeps the rate constant). Saving and logging are off.

The last line printed is one JSON object: per task ``T``: ``T_base`` (held-out accuracy of the
base), ``T_trl_final`` and ``T_rlft_final`` (means over seeds of the final held-out accuracy),
``T_rlft_steps_to_trl_final`` (mean over seeds of the first evaluated step at which rlft's
accuracy reached that seed's TRL final accuracy; null when a seed never did),
``T_rlft_steps_to_trl_final_seeds``, ``T_step_ratio`` (that mean over the steps TRL ran; the
issue's goal is <= 0.5), ``T_curves`` (eval steps and per-seed accuracies of each library) and
``T_seconds``; and at top level the issue's keys ``trl_final``, ``rlft_final`` and
``rlft_steps_to_trl_final``, each a dict keyed by task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from throughput_vs_trl import ensure_trl_venv

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"arithmetic": ROOT / "examples" / "demo.yaml", "multistep": ROOT / "examples" / "multistep" / "recipe.yaml"}
THREADS = 1  # --threads; one torch thread per process is fastest on 2 cores shared with other jobs


# ----------------------------------------------------------------------------------------------
# The figures: pure functions of the curves.


def steps_to_reach(steps: list[int], accuracies: list[float], target: float) -> int | None:
    """The first evaluated step whose accuracy is at least ``target``; None if none is."""
    for step, accuracy in zip(steps, accuracies, strict=True):
        if accuracy >= target:
            return step
    return None


def task_figures(task: str, steps: list[int], rlft: dict[int, list[float]], trl: dict[int, list[float]],
                 base: float) -> dict[str, Any]:
    """The JSON keys of one task from per-seed curves (accuracy at each of ``steps``)."""
    seeds = sorted(rlft)
    reach = [steps_to_reach(steps, rlft[s], trl[s][-1]) for s in seeds]
    mean_reach = None if None in reach else statistics.mean(r for r in reach if r is not None)
    return {
        f"{task}_base": base,
        f"{task}_trl_final": statistics.mean(trl[s][-1] for s in seeds),
        f"{task}_rlft_final": statistics.mean(rlft[s][-1] for s in seeds),
        f"{task}_rlft_steps_to_trl_final": mean_reach,
        f"{task}_rlft_steps_to_trl_final_seeds": reach,
        f"{task}_step_ratio": None if mean_reach is None else mean_reach / steps[-1],
        f"{task}_curves": {"steps": steps, "rlft": {str(s): rlft[s] for s in seeds},
                           "trl": {str(s): trl[s] for s in seeds}},
    }


def eval_steps(steps: int, every: int) -> list[int]:
    """0, every, 2 every, ... and the last step (a model is saved at each)."""
    return sorted({*range(0, steps, every), steps})


# ----------------------------------------------------------------------------------------------
# TRL's worker: runs under benchmarks/.venv-trl, imports rlft's task from src/.


def trl_worker(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlft.config import load_config
    from rlft.tasks import Problem, build_task

    torch.set_num_threads(THREADS)
    config = load_config(a.recipe, json.loads(a.overrides))
    task = build_task(config.task)
    group, batch = config.algorithm.group_size, config.train.batch_size
    problems = task.train_problems(a.steps * batch // group, torch.Generator().manual_seed(a.seed))
    out = Path(a.out)

    def reward_func(prompts, completions, answer, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return task.reward(completions, [Problem(prompt=p, answer=x) for p, x in zip(prompts, answer, strict=True)])

    class SaveEvery(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
            if state.global_step % a.eval_every == 0 or state.global_step == a.steps:
                model.save_pretrained(out / f"step_{state.global_step:07d}")
                tokenizer.save_pretrained(out / f"step_{state.global_step:07d}")

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    args = GRPOConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=group, max_completion_length=config.rollout.max_new_tokens,
        temperature=config.rollout.temperature, top_p=config.rollout.top_p, beta=config.algorithm.kl_coef,
        learning_rate=config.train.learning_rate, max_steps=a.steps, seed=a.seed,
        gradient_checkpointing=False, bf16=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems]),
                          callbacks=[SaveEvery()])
    trainer.train()


def run_trl(python: Path, recipe: Path, overrides: list[str], model: Path, seed: int, steps: int, every: int,
            out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [str(python), __file__, "--worker", "--recipe", str(recipe), "--overrides", json.dumps(overrides),
               "--model", str(model), "--seed", str(seed), "--steps", str(steps), "--eval-every", str(every),
               "--out", str(out), "--threads", str(THREADS)]
    with (out / "worker.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the TRL worker failed (exit {done.returncode}); see {out / 'worker.log'}")


# ----------------------------------------------------------------------------------------------
# rlft's side and the one evaluator, in this process.


def run_rlft(recipe: Path, overrides: list[str], model: Path, seed: int, steps: int, every: int, run: Path) -> float:
    """rlft's recipe from ``model``, a checkpoint every ``every`` steps; its own final accuracy."""
    from rlft.config import load_config
    from rlft.trainers.registry import train

    summary = train(load_config(recipe, [
        *overrides, f"model.path={model}", "warm_start.steps=0", f"train.steps={steps}", f"eval.every={steps}",
        f"checkpoint.every={every}", f"checkpoint.keep={steps // every + 2}", f"seed={seed}", f"run_dir={run}",
    ]), progress=False)
    return summary["final_accuracy"]


def score(recipe: Path, overrides: list[str], base_model: Path, points: dict[int, Path]) -> list[float]:
    """Held-out accuracy of each saved model (a Hugging Face folder, or an rlft checkpoint's
    weights over the base), in step order, with rlft's evaluation of the recipe."""
    from safetensors.torch import load_file

    from rlft.config import load_config
    from rlft.models.loading import load_policy
    from rlft.tasks import build_task
    from rlft.trainers.setup import evaluate_policy

    config = load_config(recipe, overrides)
    task = build_task(config.task)
    out = []
    for step in sorted(points):
        folder = points[step]
        if (folder / "config.json").exists():
            policy, tokenizer = load_policy(str(folder))
        else:  # checkpoints/step_N: the learner's modules, the policy under "policy."
            policy, tokenizer = load_policy(str(base_model))
            weights = load_file(str(folder / "model.safetensors"))
            policy.load_state_dict({k.removeprefix("policy."): v for k, v in weights.items()
                                    if k.startswith("policy.")})
        task.prepare(tokenizer, config.rollout.max_prompt_tokens)
        out.append(evaluate_policy(config, policy, tokenizer, task).accuracy)
    return out


def saved(folder: Path, base_model: Path) -> dict[int, Path]:
    """Step -> saved model (``step_N`` folders), step 0 being the base."""
    points = {int(p.name.removeprefix("step_")): p for p in folder.glob("step_*") if p.is_dir()}
    return {0: base_model, **points}


def bench_task(name: str, args: argparse.Namespace, trl_python: Path) -> dict[str, Any]:
    from rlft.config import load_config
    from rlft.trainers.registry import train

    recipe, overrides, out = TASKS[name], [f"train.torch_threads={THREADS}", *args.set], Path(args.out) / name
    seconds = {"base": 0.0, "rlft": 0.0, "trl": 0.0, "eval": 0.0}
    mark = time.time()
    train(load_config(recipe, [*overrides, "train.steps=0", f"run_dir={out / 'base'}"]), progress=False)
    base_model = out / "base" / "base_model"
    seconds["base"] = time.time() - mark
    steps = eval_steps(args.steps, args.eval_every)
    rlft: dict[int, list[float]] = {}
    trl: dict[int, list[float]] = {}
    base = None
    for seed in args.seeds:
        mark = time.time()
        own_final = run_rlft(recipe, overrides, base_model, seed, args.steps, args.eval_every, out / f"rlft-seed{seed}")
        seconds["rlft"] += (mark2 := time.time()) - mark
        run_trl(trl_python, recipe, overrides, base_model, seed, args.steps, args.eval_every, out / f"trl-seed{seed}")
        seconds["trl"] += (mark := time.time()) - mark2
        rlft[seed] = score(recipe, overrides, base_model, saved(out / f"rlft-seed{seed}" / "checkpoints", base_model))
        trl[seed] = score(recipe, overrides, base_model, saved(out / f"trl-seed{seed}", base_model))
        seconds["eval"] += time.time() - mark
        base = rlft[seed][0]
        if abs(own_final - rlft[seed][-1]) > 1e-9:
            print(f"  note: rlft's own final evaluation said {own_final:.4f}, the checkpoint scores {rlft[seed][-1]:.4f}")
        print(f"{name} seed {seed}: rlft {' '.join(f'{x:.1%}' for x in rlft[seed])} | "
              f"TRL {' '.join(f'{x:.1%}' for x in trl[seed])} (steps {steps})", flush=True)
    assert base is not None
    figures = task_figures(name, steps, rlft, trl, base)
    figures[f"{name}_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return figures


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50,
                        help="RL steps of every run (both libraries; 50: about 12 minutes on 2 busy cores).")
    parser.add_argument("--eval-every", type=int, default=10, help="Save and score both models every this many steps.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Recipe overrides of every run (the base, rlft, and TRL's aligned settings).")
    parser.add_argument("--out", default="runs/bench-learning-vs-trl", help="Parent folder of the runs (replaced).")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads of each process (both libraries).")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    if args.worker:
        return trl_worker(args)

    import torch
    from transformers.utils import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    trl_python = ensure_trl_venv()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.time()
    result: dict[str, Any] = {}
    for name in args.tasks:
        result.update(bench_task(name, args, trl_python))
    for key in ("trl_final", "rlft_final", "rlft_steps_to_trl_final"):
        result[key] = {name: result[f"{name}_{key}"] for name in args.tasks}
    result.update(seeds=args.seeds, steps=args.steps, eval_every=args.eval_every, overrides=args.set,
                  seconds_total=round(time.time() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
