"""The architecture matrix: tiny random models of 14 families, built from their transformers
configs (hidden 64, 2 layers) and saved with a locally trained tokenizer under a ChatML or a
Llama-3-style (BOS) chat template, run through the paths a user runs.

For each: the sampler's and the scorer's log-probs equal the model's own forward on unpadded rows
(Mistral's window is shorter than prompt + completion, so its fast decoder must not be used);
dropout is off in the update (a train-mode forward equals the eval-mode one); and one `rlft.train`
GRPO run with LoRA at its default targets whose step 1 runs at learning rate 0 (a linear warm-up)
has KL 0 and clips nothing over two mini-batches, whose step 2 moves the adapter, and whose final
model loads with AutoModelForCausalLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import processors
from transformers import AutoModelForCausalLM

import rlft
from rlft.errors import RlftError
from rlft.models.dropout import disable_dropout
from rlft.models.loading import load_policy
from rlft.models.tiny import train_tokenizer
from rlft.models.tokens import encode_prompts
from rlft.rollout import sampling
from rlft.rollout.sampling import sample, score_completions

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
WINDOW = 8  # Mistral's, Gemma 2's and Gemma 3's sliding window: shorter than every prompt here
# name: (config class, chat template, config fields)
ARCHITECTURES = {
    "llama": ("LlamaConfig", "llama3", SIZE),
    "qwen2": ("Qwen2Config", "chatml", SIZE),
    "qwen3": ("Qwen3Config", "chatml", {**SIZE, "head_dim": 16}),
    "mistral": ("MistralConfig", "llama3", {**SIZE, "head_dim": 16, "sliding_window": WINDOW}),
    "gemma": ("GemmaConfig", "llama3", {**SIZE, "head_dim": 16}),
    "gemma2": ("Gemma2Config", "llama3", {**SIZE, "head_dim": 16, "sliding_window": WINDOW}),
    "gemma3": ("Gemma3TextConfig", "llama3", {**SIZE, "head_dim": 16, "sliding_window": WINDOW,
                                             "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": ("Phi3Config", "chatml", SIZE),
    "gpt_neox": ("GPTNeoXConfig", "llama3", {k: v for k, v in SIZE.items() if k != "num_key_value_heads"}),
    "opt": ("OPTConfig", "llama3", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                       word_embed_proj_dim=64, max_position_embeddings=256)),
    "gpt2": ("GPT2Config", "chatml", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    "olmo2": ("Olmo2Config", "chatml", SIZE),
    "smollm3": ("SmolLM3Config", "chatml", SIZE),
    "granite": ("GraniteConfig", "chatml", {**SIZE, "embedding_multiplier": 12.0, "logits_scaling": 8.0,
                                            "residual_multiplier": 0.22, "attention_multiplier": 0.0625}),
}  # fmt: skip
PROBLEMS = [(f"{a}+{b}=", str(a + b)) for a, b in [(1, 2), (12, 345), (7, 8), (40, 2), (3, 33), (9, 90)]]


def chat_tokenizer(template: str, corpus: list[str]):
    """The tiny model's tokenizer (rlft.models.tiny) with ChatML turns, or with a BOS that the
    tokenizer adds and Llama 3's header/eot template."""
    if template == "chatml":
        return train_tokenizer(corpus, 300, chat=True)
    tok = train_tokenizer(corpus, 300)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"]})  # fmt: skip
    bos = tok.bos_token
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)]
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def architecture_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each installed architecture's tiny model folder, built once per session (about 1 s)."""
    from rlft.tasks import ArithmeticTask

    corpus = ArithmeticTask().corpus(300)
    tokenizers = {t: chat_tokenizer(t, corpus) for t in ("chatml", "llama3")}
    root, dirs = tmp_path_factory.mktemp("architectures"), {}
    for name, (config_class, template, fields) in ARCHITECTURES.items():
        if not hasattr(transformers, config_class):
            continue
        tok = tokenizers[template]
        config = getattr(transformers, config_class)(
            vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **fields,
        )
        torch.manual_seed(0)
        out = root / name
        AutoModelForCausalLM.from_config(config).save_pretrained(out)
        tok.save_pretrained(out)
        settings = json.loads((out / "tokenizer_config.json").read_text())
        settings.update(tokenizer_class="PreTrainedTokenizerFast", padding_side="left")
        (out / "tokenizer_config.json").write_text(json.dumps(settings))
        dirs[name] = out
    return dirs


def model_dir(architecture_dirs: dict[str, Path], name: str) -> Path:
    if name not in architecture_dirs:
        pytest.skip(f"transformers {transformers.__version__} has no {ARCHITECTURES[name][0]}")
    return architecture_dirs[name]


def own_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log p(completion | prompt) per token from one plain forward of the unpadded row."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    return logits.float().log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_sampler_and_scorer_logprobs_are_the_models_own(architecture_dirs, name):
    model, tok = load_policy(str(model_dir(architecture_dirs, name)))
    model.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q, _ in PROBLEMS[:3]]  # fmt: skip
    ids, mask = encode_prompts(tok, prompts)
    ids, mask = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)  # groups of 2: the scorer shares prompts
    assert ids.shape[1] > WINDOW
    rollout = sample(model, ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     max_new_tokens=10, generator=torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        scored, _, _ = score_completions(model, rollout)
    for row in range(len(ids)):
        n = int(rollout.completion_mask[row].sum())
        reference = own_logprobs(model, ids[row][mask[row].bool()].tolist(), rollout.completion_ids[row, :n].tolist())
        torch.testing.assert_close(rollout.logprobs[row, :n], reference, atol=1e-4, rtol=0)
        torch.testing.assert_close(scored[row, :n], reference, atol=1e-4, rtol=0)


def test_the_fast_decoder_is_used_only_where_attention_sees_every_position(architecture_dirs):
    """Mistral's window (8) is shorter than the sequence: the model's own forward decodes; with a
    window longer than the sequence, and for Llama, the static-cache decoder does."""
    from transformers import DynamicCache

    def fast(model, length):
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([[1, 2, 3]]), past_key_values=cache, use_cache=True)
        return sampling._StaticKVDecoder.supports(model.eval(), cache, length)

    mistral, _ = load_policy(str(model_dir(architecture_dirs, "mistral")))
    assert not fast(mistral, 20)
    mistral.config.sliding_window = 4096
    assert fast(mistral, 20)
    llama, _ = load_policy(str(model_dir(architecture_dirs, "llama")))
    assert fast(llama, 20)
    llama.config.final_logit_softcapping = 30.0  # a cap the decoder does not apply
    assert not fast(llama, 20)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_dropout_is_off_in_a_train_mode_forward(architecture_dirs, name):
    """Every dropout of the config at 0.1 (GPT-2's and OPT's checkpoints have it): after
    disable_dropout a train-mode forward is the eval-mode forward."""
    folder = model_dir(architecture_dirs, name)
    config = transformers.AutoConfig.from_pretrained(folder)
    rates = [k for k in vars(config) if ("drop" in k) and isinstance(getattr(config, k), float)]
    for key in rates:
        setattr(config, key, 0.1)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config)
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    expected = model.eval()(ids).logits
    disable_dropout(model.train())
    assert model.training
    torch.testing.assert_close(model(ids).logits, expected, atol=0, rtol=0)


def length_reward(prompts, completions, **context):
    return [float(len(c) % 3) for c in completions]  # varies within a group: GRPO has advantages


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_lora_grpo_run(architecture_dirs, name, tmp_path):
    """`rlft.train` with model.path and LoRA at its default targets: step 1 (learning rate 0 by the
    warm-up) has KL 0 and clips nothing over its two mini-batches (old log-probs from the eval-mode
    pass); step 2 moves the adapter; the final model loads with AutoModelForCausalLM."""
    folder = model_dir(architecture_dirs, name)
    data, held_out = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for path, rows in ((data, PROBLEMS[:4]), (held_out, PROBLEMS[4:])):
        path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "answer": a}) + "\n"
                                for q, a in rows))  # fmt: skip
    recipe = [
        f"model.path={folder}", "task.name=dataset", f"task.data={data}", f"task.eval_data={held_out}", "task.eval_size=2",
        "warm_start.steps=0", "algorithm.name=grpo", "algorithm.group_size=2", "algorithm.kl_coef=0.05",
        "train.steps=2", "train.batch_size=4", "train.mini_batch_size=2", "train.micro_batch_size=2",
        "train.learning_rate=0.05", "train.lr_scheduler=linear", "train.warmup_steps=1", "train.torch_threads=1",
        "rollout.max_new_tokens=6", "lora.r=4", "eval.every=10", "eval.batch_size=2", "checkpoint.every=10",
        f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    if name == "phi3":  # Llama's names are not Phi-3's: refused before anything is written
        with pytest.raises(RlftError, match="qkv_proj"):
            rlft.train(overrides=[*recipe, "lora.target_modules=[q_proj,v_proj]"], reward=length_reward, progress=False)
        assert not (tmp_path / "run").exists()
    rlft.train(overrides=recipe, reward=length_reward, progress=False)
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in steps if m.get("step") == 1 and "policy/kl" in m)
    assert first["train/lr"] == 0.0
    assert abs(first["policy/kl"]) < 1e-6 and first["policy/clip_fraction"] == 0.0
    final = tmp_path / "run" / "final_model"
    from safetensors.torch import load_file

    adapter = load_file(final / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0: it trained
    assert isinstance(AutoModelForCausalLM.from_pretrained(final), transformers.PreTrainedModel)
