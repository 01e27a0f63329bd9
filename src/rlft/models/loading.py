"""Load any Hugging Face causal LM with its tokenizer, with errors a user can act on."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlft.common.optim import check_finite_weights
from rlft.errors import ConfigError, RlftError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _looks_like_hub_id(name: str) -> bool:
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and not Path(name).exists()


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder or hub id, left-padded, with a pad token."""
    folder = Path(name_or_path).expanduser()
    # Some tokenizer classes (Qwen2's in transformers 5) build an empty vocabulary when no files
    # are present instead of failing, so a local folder is checked explicitly.
    if folder.is_dir() and not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise RlftError(
            f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}). Save the tokenizer "
            "next to the model with tokenizer.save_pretrained(FOLDER)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise RlftError(
            f"Could not load a tokenizer from {name_or_path!r}: {_first_line(exc)}\n"
            "A model folder needs tokenizer files (tokenizer.json or tokenizer.model and "
            "tokenizer_config.json). Save them with tokenizer.save_pretrained(FOLDER)."
        ) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise RlftError(
                f"The tokenizer of {name_or_path!r} has neither a pad nor an EOS token."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, dtype: str = "float32") -> PreTrainedModel:
    """A causal LM from a local folder or a hub id."""
    path = Path(name_or_path).expanduser()
    if not path.exists() and not _looks_like_hub_id(name_or_path):
        raise RlftError(
            f"Model folder {name_or_path} does not exist. Give an existing folder written by "
            "save_pretrained, or a hub id such as 'Qwen/Qwen2.5-0.5B'."
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise RlftError(
            f"{path} has no config.json, so it is not a Hugging Face model folder. "
            "Save the model with model.save_pretrained(FOLDER)."
        )
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path) if path.exists() else name_or_path, dtype=_DTYPES[dtype]
        )
    except SafetensorError as exc:  # a truncated or damaged weights file (an interrupted copy)
        raise RlftError(
            f"The weights in {name_or_path} cannot be read ({_first_line(exc)}): a .safetensors file "
            "is truncated or damaged, for example by an interrupted copy or download. Copy the "
            "model again (compare its size or SHA-256 with the original)."
        ) from None
    except OSError as exc:
        raise RlftError(
            f"Could not load the model {name_or_path!r}: {_first_line(exc)}\n"
            "If it is a hub id, check the name and the network (or set HF_HUB_OFFLINE=1 and use a "
            "local folder)."
        ) from None


def load_policy(
    name_or_path: str, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer; the tokenizer is checked first, so a missing one is named clearly."""
    if Path(name_or_path).expanduser().is_dir() or not _looks_like_hub_id(name_or_path):
        model = load_model(name_or_path, dtype)
        tokenizer = load_tokenizer(name_or_path)
    else:
        tokenizer = load_tokenizer(name_or_path)
        model = load_model(name_or_path, dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def frozen_reference(model: PreTrainedModel) -> PreTrainedModel:
    """A frozen copy of ``model`` for the KL penalty: eval mode, no gradients."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_max_new_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
) -> None:
    """Refuse ``rollout.max_new_tokens`` beyond what the model's context window leaves after the
    longest prompt: the sampler allocates (batch, prompt + max_new_tokens) up front, so an absurd
    value is killed for memory, and positions past ``max_position_embeddings`` are garbage."""
    window = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(window, int) or window <= 0:
        return  # no declared context window (e.g. a state-space model): nothing to check against
    longest = 1
    if prompts:
        from rlft.models.tokens import encode_prompts

        longest = max(longest, int(encode_prompts(tokenizer, prompts)[0].shape[1]))
    room = window - longest
    if max_new_tokens > room:
        raise ConfigError(
            f"rollout.max_new_tokens={max_new_tokens} does not fit the model's context window: "
            f"max_position_embeddings is {window} and the longest prompt has {longest} tokens, so at "
            f"most {max(room, 0)} new tokens fit. Set rollout.max_new_tokens to {max(room, 1)} or less"
            + (" (or use a model with a longer context)." if room > 0 else "; shorten the prompts.")
        )


def save_model_atomic(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path
) -> None:
    """``save_pretrained`` into a temporary sibling, then rename into place."""
    check_finite_weights(model, f"model {Path(folder).name}/")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
