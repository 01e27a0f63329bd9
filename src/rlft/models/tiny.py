"""A small Qwen2-architecture model and a byte-level BPE tokenizer, built offline.

Both are saved with ``save_pretrained`` so that plain ``transformers`` loads them back. For a
``qwen2`` model ``AutoTokenizer`` always builds ``Qwen2Tokenizer``, which replaces whatever
normaliser and pre-tokenizer the saved ``tokenizer.json`` had with Qwen's own. So the tokenizer
trained here uses exactly Qwen's pipeline (NFC, Qwen's split regex, byte-level), and
:func:`build_tiny_model` checks that the reloaded tokenizer gives the same ids. Qwen's regex puts
every digit in its own token, which is what makes arithmetic learnable by a model this small.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rlft.models.tiny_config import TinyModelConfig  # apart, so reading a recipe needs no torch

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# For conversational data: ChatML turns, as Qwen's instruct models write them. The end of a turn
# is the tokenizer's EOS, so sampling stops there and the warm start teaches the model to end turns.
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
# The split regex of transformers' Qwen2Tokenizer (see the module docstring for why it must match).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int, chat: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with Qwen2's pre-tokenization on ``corpus``; ``chat`` adds
    the ChatML turn tokens and template (the end of a turn is then the EOS)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, *([TURN_START, TURN_END] if chat else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=TURN_END if chat else EOS_TOKEN, pad_token=PAD_TOKEN, padding_side="left"
    )
    if chat:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model_config(config: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.context_length,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        use_sliding_window=False,
    )


def build_tiny_model(
    config: TinyModelConfig, corpus: Iterable[str], out_dir: str | Path, seed: int = 0, chat: bool = False
) -> Path:
    """Train a tokenizer on ``corpus``, initialise a Qwen2 model, save both into ``out_dir``;
    ``chat`` gives the tokenizer a ChatML chat template for conversational data."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, config.vocab_size, chat=chat)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_model_config(config, tokenizer))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _declare_tokenizer_class(out_dir)
    check_tokenizer_roundtrip(tokenizer, out_dir, corpus_sample=list(corpus)[:200])
    return out_dir


def _declare_tokenizer_class(out_dir: Path) -> None:
    path = out_dir / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "Qwen2Tokenizer"
    data["padding_side"] = "left"
    path.write_text(json.dumps(data, indent=2))


def check_tokenizer_roundtrip(
    tokenizer: PreTrainedTokenizerFast, folder: Path, corpus_sample: list[str]
) -> None:
    """Raise if ``AutoTokenizer`` reloads ``folder`` into a tokenizer that gives other ids."""
    reloaded = AutoTokenizer.from_pretrained(folder)
    probes = corpus_sample + ["hello  world\n 12345 +-*/ =?", "Ünïcode façade 3.14"]
    for text in probes:
        if reloaded(text).input_ids != tokenizer(text).input_ids:
            raise RuntimeError(
                f"The tokenizer saved in {folder} reloads as {type(reloaded).__name__} with "
                f"different ids for {text!r}; the tiny model's tokenizer pipeline needs updating."
            )
