"""LoRA through ``peft``: one copy of the base weights serves as both policy and reference.

The policy is the base model with a LoRA adapter (Hu et al., 2021); the reference for the KL
penalty is the same base with the adapter disabled (:class:`AdapterDisabledReference`), so no
second copy of the weights is kept. ``export_merged`` folds the adapter into the base weights and
writes a plain Hugging Face model folder that ``transformers`` loads without ``peft``.

``peft`` is imported inside the functions, so ``import rlft`` does not need it
(``pip install 'rlft[scale]'``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.errors import RlftError

# Projections of Llama/Qwen2/Mistral-style blocks; a recipe may name others.
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise RlftError(
            "LoRA needs peft: pip install 'rlft[scale]' (or pip install peft)."
        ) from None
    return peft


def apply_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
) -> Any:
    """Wrap ``model`` in a ``peft`` LoRA adapter; only the adapter's weights require grad.

    The LoRA update is ``(alpha / r) * B A`` with ``B`` initialised to zero, so the wrapped model
    computes exactly what ``model`` did until the first optimiser step.
    """
    peft = _peft()
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in present]
    if missing:
        raise RlftError(
            f"lora.target_modules names {missing}, which the model does not have; "
            f"linear layers it has include: {sorted(n for n in present if n.endswith('proj'))[:12]}."
        )
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapter_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` computes the base model (the adapter is bypassed)."""
    if not is_lora(model):
        raise RlftError("adapter_disabled needs a model wrapped by apply_lora.")
    with model.disable_adapter():  # type: ignore[operator]
        yield model


class AdapterDisabledReference(torch.nn.Module):
    """The frozen reference of a LoRA policy: the policy's own base weights, adapter bypassed.

    It holds no weights of its own (the policy is kept outside the module tree, so it is neither
    copied nor saved with it) and always runs in eval mode without gradients.
    """

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.__dict__["_policy"] = policy  # not a submodule: no second registration of weights

    @property
    def config(self) -> Any:
        return self._policy.config

    def get_base_model(self) -> torch.nn.Module:
        """The wrapped transformers model (for signature checks; its weights are the policy's)."""
        return self._policy.get_base_model()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        policy = self._policy
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad(), adapter_disabled(policy):
                return policy(*args, **kwargs)
        finally:
            policy.train(was_training)


def lora_reference(policy: torch.nn.Module) -> AdapterDisabledReference:
    """The reference for the KL penalty of a LoRA policy (see :class:`AdapterDisabledReference`)."""
    return AdapterDisabledReference(policy)


def trainable_parameter_names(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def save_adapter(model: Any, folder: str | Path, base_model: str | Path) -> None:
    """Save only the adapter, recording which base folder it belongs to."""
    folder = Path(folder)
    model.save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    data = json.loads(config_path.read_text())
    data["base_model_name_or_path"] = str(base_model)
    config_path.write_text(json.dumps(data, indent=2))


def merged_model(model: Any) -> PreTrainedModel:
    """A plain ``transformers`` model with the adapter folded into its weights (a new object;
    ``model`` keeps its adapter)."""
    import copy

    return copy.deepcopy(model).merge_and_unload()


def find_adapter(run_or_folder: str | Path) -> tuple[Path, Path | None]:
    """(model folder, base folder or None) of a run folder or a model/adapter folder."""
    root = Path(run_or_folder).expanduser()
    candidates = [root, root / "final_model"]
    for folder in candidates:
        if (folder / "adapter_config.json").is_file():
            base = json.loads((folder / "adapter_config.json").read_text()).get(
                "base_model_name_or_path"
            )
            base_path = Path(base) if base else None
            if base_path is None or not base_path.exists():
                base_path = root / "base_model" if (root / "base_model").is_dir() else base_path
            return folder, base_path
        if (folder / "config.json").is_file():
            return folder, None
    raise RlftError(
        f"{root} is neither a run folder with final_model/ nor a model or adapter folder. "
        "Give the folder printed at the end of `rlft train`."
    )


def export_merged(run_or_folder: str | Path, out_dir: str | Path) -> Path:
    """Write a plain Hugging Face model folder (weights + tokenizer) for ``run_or_folder``.

    A LoRA adapter is merged into its base; a folder that already holds a full model is copied.
    """
    from rlft.models.loading import load_policy, load_tokenizer

    folder, base = find_adapter(run_or_folder)
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise RlftError(f"{out} exists and is not empty; choose another --output or remove it.")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if base is None:
        shutil.copytree(folder, tmp)
    else:
        if not Path(base).exists():
            raise RlftError(f"The adapter in {folder} was trained on {base}, which does not exist.")
        peft = _peft()
        model, _ = load_policy(str(base))
        merged = peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        tokenizer: PreTrainedTokenizerBase = load_tokenizer(
            str(folder) if (folder / "tokenizer_config.json").exists() else str(base)
        )
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
