"""The dataset task as a user meets it: their file, their columns, their reward, their mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlft.config import TaskConfig, WarmStartConfig, config_from_dict
from rlft.errors import ConfigError
from rlft.rewards import build_reward
from rlft.tasks import TASKS, DatasetTask, build_task, reward_context
from rlft.tasks.data import Row, load_rows

ROWS = [{"prompt": f"What is {a} plus {b}?", "answer": str(a + b), "difficulty": a % 3, "tests": [a, b]}
        for a in range(10) for b in range(4)]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def exact(prompts, completions, answers, **context):
    return [float(c.strip() == a) for c, a in zip(completions, answers, strict=True)]


def task_from(path: Path, **fields) -> DatasetTask:
    return build_task(TaskConfig(name="dataset", data=str(path), **fields), lambda: exact, WarmStartConfig())


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    from rlft.config import TinyModelConfig
    from rlft.models.loading import load_tokenizer
    from rlft.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("chat_model")
    small = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    build_tiny_model(small, [r["prompt"] for r in ROWS], out, chat=True)
    return load_tokenizer(str(out))


def test_the_registry_and_the_recipe_name_the_same_tasks():
    import typing

    from rlft.schema import registered

    marker = registered(typing.get_type_hints(TaskConfig, include_extras=True)["name"])
    assert marker is not None and marker.names() == list(TASKS) and "dataset" in TASKS


def test_conversational_rows_are_rendered_by_the_tokenizers_own_template(tmp_path, chat_tokenizer):
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    rows = [{"prompt": messages, "answer": "5"}] + [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in ROWS]
    task = task_from(write_jsonl(tmp_path / "chat.jsonl", rows), system_prompt="Answer with a number.",
                     eval_fraction=0.2)  # fmt: skip
    assert task.conversational
    task.prepare(chat_tokenizer)
    every = {p.prompt for p in task.eval_problems} | {p.prompt for p in task.train_problems(200, torch.Generator().manual_seed(0))}
    expected = chat_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Answer with a number."}, *messages], tokenize=False, add_generation_prompt=True
    )
    assert expected in every
    assert expected.startswith("<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\n")
    assert expected.endswith("<|im_start|>assistant\n")


def test_extra_columns_reach_a_python_reward_aligned_with_the_prompts(tmp_path):
    seen = {}

    def reward(prompts, completions, answers, difficulty, tests, **context):
        seen.update(prompts=list(prompts), difficulty=list(difficulty), tests=list(tests), answers=list(answers))
        return [0.0] * len(prompts)

    task = build_task(TaskConfig(name="dataset", data=str(write_jsonl(tmp_path / "d.jsonl", ROWS))),
                      lambda: reward, WarmStartConfig())  # fmt: skip
    task.prepare(None)
    problems = task.train_problems(6, torch.Generator().manual_seed(1))
    task.reward(["x"] * 6, problems)
    by_prompt = {r["prompt"]: r for r in ROWS}
    assert seen["prompts"] == [p.prompt for p in problems]
    assert seen["difficulty"] == [by_prompt[p]["difficulty"] for p in seen["prompts"]]
    assert seen["tests"] == [by_prompt[p]["tests"] for p in seen["prompts"]]
    assert seen["answers"] == [by_prompt[p]["answer"] for p in seen["prompts"]]
    assert set(reward_context(problems)) == {"problems", "answers", "difficulty", "tests"}


def test_the_held_out_split_never_reaches_a_training_batch(tmp_path):
    # Duplicated prompts: a held-out prompt's twin must be held out with it.
    task = task_from(write_jsonl(tmp_path / "d.jsonl", ROWS + ROWS[:10]), eval_fraction=0.25)
    task.prepare(None)
    held = {p.prompt for p in task.eval_problems}
    assert len(held) == 10  # 25% of the 40 distinct prompts
    gen = torch.Generator().manual_seed(0)
    trained = {p.prompt for _ in range(50) for p in task.train_problems(16, gen)}
    assert trained and not trained & held
    assert trained | held == {r["prompt"] for r in ROWS}
    again = task_from(write_jsonl(tmp_path / "d2.jsonl", ROWS + ROWS[:10]), eval_fraction=0.25)
    again.prepare(None)
    assert [p.prompt for p in again.eval_problems] == [p.prompt for p in task.eval_problems]  # seeded


def test_eval_data_rows_are_dropped_from_training(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    test = write_jsonl(tmp_path / "test.jsonl", ROWS[:5])
    task = task_from(train, eval_data=str(test))
    task.prepare(None)
    assert task.dropped_overlap == 5
    gen = torch.Generator().manual_seed(0)
    assert not {p.prompt for p in task.train_problems(500, gen)} & {r["prompt"] for r in ROWS[:5]}


def test_every_format_and_a_saved_datasets_folder_load_alike(tmp_path):
    import datasets

    flat = [{k: v for k, v in r.items() if k != "tests"} for r in ROWS]
    write_jsonl(tmp_path / "d.jsonl", flat)
    (tmp_path / "d.json").write_text(json.dumps(flat))
    with (tmp_path / "d.csv").open("w") as f:
        f.write("prompt,answer,difficulty\n" + "".join(f'"{r["prompt"]}",{r["answer"]},{r["difficulty"]}\n' for r in flat))
    datasets.Dataset.from_list(flat).to_parquet(str(tmp_path / "d.parquet"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(flat)}).save_to_disk(str(tmp_path / "saved"))
    prompts = [r["prompt"] for r in flat]
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet", "saved"):
        rows = load_rows(str(tmp_path / name))
        assert [r.values["prompt"] for r in rows] == prompts, name
        assert [str(r.values["answer"]) for r in rows] == [r["answer"] for r in flat], name
    with pytest.raises(ConfigError, match="has no split 'validation'; it has train"):
        load_rows(str(tmp_path / "saved"), split="validation")


@pytest.mark.parametrize(
    "content, fields, message",
    [
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n', {}, r"d.jsonl:2: not valid JSON"),
        ('{"question": "a", "answer": "1"}\n', {}, r"no column 'prompt' .* the columns are 'answer', 'question'"),
        ('{"prompt": "a", "solution": "1"}\n', {}, r"no column 'answer' .* or task.answer_field: null"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n', {}, r"1 of 2 rows have no 'answer': .*d.jsonl:2"),
        ('{"prompt": 7, "answer": "1"}\n{"prompt": "b", "answer": "2"}\n', {}, r"d.jsonl:1: the prompt .* must be a string or a list"),
        ("", {}, r"holds no rows"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n', {}, r"holds out none"),
        ('{"prompt": "a", "answer": "1", "completions": 3}\n' * 3, {}, r"column 'completions' would clash"),
        ('{"prompt": [{"role": "user", "content": "a"}], "answer": "1"}\n', {"chat_template": "none"}, r"list of messages but task.chat_template is 'none'"),
        ('{"prompt": "a", "answer": "1"}\n', {"system_prompt": "hi"}, r"system_prompt is set but every prompt is plain text"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": [{"role": "usr", "content": "b"}], "answer": "2"}\n', {},
         r"d.jsonl:2: message 0 has the role 'usr', which is not a chat role. Did you mean 'user'\? The roles are "
         r"system, user, assistant, tool\."),
        ('{"prompt": "a", "answer": "1", "answer": "2"}\n', {}, r"d.jsonl:1: the key 'answer' appears twice in one object"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": [{"role": "user", "content": "b", "role": "system"}], "answer": "2"}\n',
         {}, r"d.jsonl:2: the key 'role' appears twice"),
    ],
)
def test_bad_data_gets_one_clear_error_naming_the_place(tmp_path, content, fields, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        task_from(path, **fields)


def test_a_repeated_key_in_a_json_file_names_the_row(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"prompt": "a", "answer": "1"}, {"prompt": "b", "prompt": "c", "answer": "2"}]')
    with pytest.raises(ConfigError, match=r"d.json\[1\]: the key 'prompt' appears twice"):
        load_rows(str(path))
    path.write_text('{"data": [{"prompt": "a", "answer": "1"}], "data": []}')
    with pytest.raises(ConfigError, match=r"d.json: the key 'data' appears twice"):
        load_rows(str(path))


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:2: not UTF-8"):
        task_from(path)


def test_conversational_prompts_need_a_chat_template(tmp_path, tiny_model_dir):
    from rlft.models.loading import load_tokenizer

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(20)]
    task = task_from(write_jsonl(tmp_path / "d.jsonl", rows))
    with pytest.raises(ConfigError, match="tokenizer has no chat template"):
        task.prepare(load_tokenizer(str(tiny_model_dir)))


def test_prompts_longer_than_the_limit_are_counted_and_named(tmp_path, tiny_model_dir):
    from rlft.models.loading import load_tokenizer

    rows = [{"prompt": "1+1=" * (40 if i in (3, 7) else 1), "answer": "2", "i": i} for i in range(20)]
    task = task_from(write_jsonl(tmp_path / "d.jsonl", rows), eval_fraction=0.5)
    with pytest.raises(ConfigError, match=r"2 of 20 prompts are longer than 50 tokens .*d.jsonl:(4|8)"):
        task.prepare(load_tokenizer(str(tiny_model_dir)), max_prompt_tokens=50)


def test_a_dataset_task_needs_a_reward_and_unread_fields_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ConfigError, match="has no reward of its own"):
        build_task(TaskConfig(name="dataset", data=str(path)), lambda: None, WarmStartConfig())
    with pytest.raises(ConfigError, match=r"task.digits is set, but task.name='dataset' does not read it"):
        config_from_dict({"task": {"name": "dataset", "data": str(path), "digits": 3}, "reward": {"type": "exact_match"}})
    with pytest.raises(ConfigError, match=r"task.data is set, but task.name='arithmetic' does not read it"):
        config_from_dict({"task": {"data": str(path)}})
    with pytest.raises(ConfigError, match="preference section is read by algorithm.name='dpo' only"):
        config_from_dict({"preference": {"data": "pairs.jsonl"}})


def test_math_verify_scores_equivalent_answers_as_equal():
    reward = build_reward({"type": "math_verify"})
    completions = [r"so \boxed{\frac{1}{2}}", "0.5", "It is 1/2.", r"$\frac{2}{4}$", "0.25", "no answer"]
    assert reward(["q"] * 6, completions, answers=["0.5"] * 6) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert reward(["q"], ["0.5"], answers=[r"\frac{1}{2}"]) == [1.0]


def bos_tokenizer():
    """A Llama-style tokenizer that adds a BOS to everything it encodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "a": 3, "b": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_a_prompt_is_tokenized_with_one_bos_and_a_target_with_none():
    from rlft.models.tokens import encode_prompts
    from rlft.tasks import Problem
    from rlft.trainers.sft import sft_batch

    tokenizer = bos_tokenizer()
    ids, mask = encode_prompts(tokenizer, ["a b", "<s> a"])  # plain text; a chat template's output
    assert ids.tolist() == [[0, 3, 4], [2, 0, 3]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    input_ids, _, labels = sft_batch(tokenizer, [Problem("a", "b")])
    assert input_ids.tolist() == [[0, 3, 4, 1]]  # BOS prompt, then the target and EOS, no second BOS
    assert labels.tolist() == [[-100, -100, 4, 1]]


def test_dpo_completions_carry_no_bos():
    from rlft.rewards.pairs import PreferencePair
    from rlft.trainers.dpo import pair_rollout

    rollout = pair_rollout(bos_tokenizer(), [PreferencePair("a", "b", "a b")])
    assert rollout.prompt_ids.tolist() == [[0, 3], [0, 3]]
    assert rollout.completion_ids.tolist() == [[4, 1, 2], [3, 4, 1]]  # chosen, rejected: text + EOS


def test_rows_from_python_train_through_the_api(tmp_path, tiny_recipe):
    import rlft

    seen_kinds = []

    def reward(prompts, completions, answers, kind, **context):
        seen_kinds.extend(kind)
        return [float(c.strip() == a) for c, a in zip(completions, answers, strict=True)]

    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "kind": "add"} for a in range(10) for b in range(10)]
    task = rlft.dataset_task(rows, reward=reward, eval_fraction=0.2, eval_size=16)
    overrides = [o for o in tiny_recipe if not o.startswith("task.")] + [f"run_dir={tmp_path / 'run'}", "train.steps=2"]
    summary = rlft.train(None, task=task, overrides=overrides, progress=False)
    assert summary["headline_metric"] == "pass_rate" and summary["eval_size"] == 16
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert summary["final_pass_rate"] == evals[-1]["eval/pass_rate"] and set(seen_kinds) == {"add"}
    assert (tmp_path / "run" / "python_task.json").exists()


def test_row_keeps_where_it_came_from(tmp_path):
    rows = load_rows(str(write_jsonl(tmp_path / "d.jsonl", ROWS[:2])))
    assert rows[1] == Row(f"{tmp_path / 'd.jsonl'}:2", ROWS[1])
