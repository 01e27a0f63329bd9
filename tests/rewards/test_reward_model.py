"""Preference pairs loading, reward-model training with Bradley-Terry, and the learned reward."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from rlft.config.reward_model import rm_recipe_from_dict
from rlft.errors import ConfigError
from rlft.rewards import build_reward, score
from rlft.rewards.pairs import PairsError, load_pairs
from rlft.trainers.reward_model import train_reward_model

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sun",
    "rain",
    "tree",
    "river",
    "stone",
    "light",
    "cloud",
    "bird",
    "song",
    "road",
]


def _pairs(n, seed=0):
    """A hidden preference: the chosen completion praises ("good"), the rejected one complains."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        out.append(
            {"prompt": f"Review {i}: ", "chosen": f"{filler} good", "rejected": f"{filler} bad"}
        )
    return out


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TINY = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 128,
}


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    train = _write_jsonl(root / "train.jsonl", _pairs(160, seed=1))
    held_out = _write_jsonl(root / "eval.jsonl", _pairs(40, seed=2))
    recipe = rm_recipe_from_dict(
        {"train_data": str(train), "eval_data": str(held_out), "tiny": TINY, "learning_rate": 3e-3,
         "epochs": 2, "batch_size": 16, "max_length": 64, "torch_threads": 1, "output_dir": str(root / "out")}
    )  # fmt: skip
    return train_reward_model(recipe, progress=False), root


def test_formats_load_the_same_pairs(tmp_path):
    records = _pairs(5)
    from_jsonl = load_pairs(_write_jsonl(tmp_path / "p.jsonl", records))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), tmp_path / "p.parquet")
    from datasets import Dataset, DatasetDict

    Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    DatasetDict({"train": Dataset.from_list(records)}).save_to_disk(str(tmp_path / "dsd"))
    for other in ("p.parquet", "ds", "dsd"):
        assert load_pairs(tmp_path / other) == from_jsonl
    assert from_jsonl[0].margin == 0.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "p", "chosen": "a"}', r"bad.jsonl:2: missing field 'rejected'"),
        ('{"prompt": "p", "chosen": " ", "rejected": "b"}', r"bad.jsonl:2: 'chosen' is empty"),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "a"}',
            r"bad.jsonl:2: chosen and rejected are the same",
        ),
        (
            '{"prompt": "p", "chosen": 3, "rejected": "a"}',
            r"bad.jsonl:2: 'chosen' must be a string",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}',
            r"bad.jsonl:2: 'margin'",
        ),
        ("{oops", r"bad.jsonl:2: not valid JSON"),
        ("[1, 2]", r"bad.jsonl:2: expected an object"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(PairsError, match=message):
        load_pairs(path)


def test_malformed_parquet_row_and_other_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist([{"prompt": "p", "chosen": "a", "rejected": "a"}]),
        tmp_path / "x.parquet",
    )
    with pytest.raises(PairsError, match=r"x.parquet row 0: chosen and rejected are the same"):
        load_pairs(tmp_path / "x.parquet")
    with pytest.raises(PairsError, match="does not exist"):
        load_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(PairsError, match="unknown format '.csv'"):
        load_pairs(tmp_path / "p.csv")


def test_recipe_validation():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        rm_recipe_from_dict({"train_data": "x.jsonl", "epoch": 2})
    with pytest.raises(ConfigError, match="train_data is empty"):
        rm_recipe_from_dict({})
    with pytest.raises(ConfigError, match="eval_fraction=1.5 is out of range"):
        rm_recipe_from_dict({"train_data": "x.jsonl"}, ["eval_fraction=1.5"])


def test_training_learns_the_hidden_preference(trained_rm):
    summary, root = trained_rm
    assert summary["eval_pairs"] == 40 and summary["steps"] == 20
    assert summary["eval_accuracy"] >= 0.9
    assert summary["eval_accuracy"] > summary["eval_accuracy_before"]
    steps = [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 20 and set(steps[0]) >= {"loss", "accuracy", "margin", "grad_norm"}
    assert sum(s["loss"] for s in steps[-5:]) < sum(s["loss"] for s in steps[:5])


def test_reward_model_reward_is_batched_normalised_and_clipped(trained_rm):
    _, root = trained_rm
    raw = build_reward(
        {"type": "reward_model", "path": str(root / "out"), "batch_size": 3, "device": "cpu"}
    )
    prompts = ["Review 7: "] * 4
    completions = ["sun good", "sun bad", "tree river good", "tree river bad"]
    values = score(raw, prompts, completions).rewards
    assert values[0] > values[1] and values[2] > values[3]
    clipped = build_reward(
        {
            "type": "reward_model",
            "path": str(root / "out" / "model"),
            "normalize": "batch",
            "clip": 0.5,
        }
    )
    normed = score(clipped, prompts, completions).rewards
    assert max(abs(v) for v in normed) <= 0.5
    assert normed[0] > normed[1]


def test_cli_rm_eval_as_a_user_runs_it(trained_rm):
    _, root = trained_rm
    cmd = [
        sys.executable,
        "-m",
        "rlft.cli.main",
        "rm",
        "eval",
        str(root / "out"),
        "--data",
        str(root / "eval.jsonl"),
        "--json",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["pairwise_accuracy"] >= 0.9


def test_cli_rm_train(tmp_path, capsys):
    from rlft.cli.main import main

    data = _write_jsonl(tmp_path / "pairs.jsonl", _pairs(24))
    tiny = ", ".join(f"{k}: {v}" for k, v in TINY.items())
    recipe = tmp_path / "rm.yaml"
    recipe.write_text(
        f"train_data: {data}\ntiny: {{{tiny}}}\nepochs: 1\nbatch_size: 8\nmax_length: 32\n"
        f"torch_threads: 1\noutput_dir: {tmp_path / 'out'}\n"
    )
    assert main(["rm", "train", str(recipe), "--no-progress", "--set", "learning_rate=1e-3"]) == 0
    assert "pairwise accuracy" in capsys.readouterr().out
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    assert (
        json.loads((tmp_path / "out" / "summary.json").read_text())["eval_pairs"] == 2
    )  # 10% of 24
    recipe.write_text("train_data: pairs.jsonl\nepohcs: 2\n")
    assert main(["rm", "train", str(recipe)]) == 2
    assert "Did you mean 'epochs'" in capsys.readouterr().err


def test_rm_train_scrubs_pii_from_pairs(tmp_path):
    from rlft.responsible.privacy import RunScrubber
    from rlft.trainers.reward_model import load_reward_pairs

    email = "pat.smith@example.com"
    pairs = [{**p, "prompt": f"Mail {email}. {p['prompt']}"} for p in _pairs(24)]
    data = _write_jsonl(tmp_path / "pairs.jsonl", pairs)
    recipe = rm_recipe_from_dict({"train_data": str(data), "tiny": TINY, "epochs": 1, "batch_size": 8, "max_length": 48,
                                  "torch_threads": 1, "output_dir": str(tmp_path / "out")})  # fmt: skip
    train_reward_model(recipe, progress=False)
    privacy = json.loads((tmp_path / "out" / "privacy.json").read_text())
    assert privacy["scrub_pii"] is True and privacy["counts"] == {"EMAIL": 24}  # one per distinct prompt
    # What the tokenizer and the model are given: scrubbed, and not scrubbed when turned off.
    for enabled in (True, False):
        train, held_out = load_reward_pairs(recipe, RunScrubber(enabled))
        prompts = " ".join(p.prompt for p in train + held_out)
        assert (email in prompts, "[EMAIL]" in prompts) == (not enabled, enabled)


def test_scores_do_not_depend_on_left_padding_with_absolute_positions(tiny_model_dir):
    """GPT-2 adds a learned embedding per position. Without position ids derived from the mask, a
    left-padded text read its first token at position (padding length), not 0: the same text
    scored 0.03 apart alone and in a batch."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from rlft.models.loading import load_tokenizer
    from rlft.rewards.reward_model import encode_texts, forward_scores, reward_scores

    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():  # position embeddings large enough that a shift would show
        model.transformer.wpe.weight.normal_(std=1.0)
    prompts, completions = ["1+2=", "123+456="], ["3", "579 and then some more words"]
    alone = reward_scores(model, tokenizer, prompts[:1], completions[:1])
    batched = reward_scores(model, tokenizer, prompts, completions)
    ids, mask = encode_texts(tokenizer, prompts, completions, max_length=64)
    assert mask[0, 0] == 0  # the short text really is left-padded in the batch
    torch.testing.assert_close(batched[:1], alone, rtol=0, atol=1e-5)
    with torch.no_grad():
        unpadded = forward_scores(model, ids[:1, ~(mask[0] == 0)], mask[:1, ~(mask[0] == 0)])
    torch.testing.assert_close(unpadded, alone, rtol=0, atol=1e-5)
