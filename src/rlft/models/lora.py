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

# Every linear layer of the decoder except the output head (peft's "all-linear"): module names
# differ by architecture (Llama's q_proj, Phi-3's qkv_proj, GPT-2's c_attn, GPT-NeoX's
# query_key_value), so no list of names fits all; a recipe may name its own instead.
ALL_LINEAR = "all-linear"
DEFAULT_TARGET_MODULES = (ALL_LINEAR,)
# Heads that are never adapted, whatever the model calls its output embedding.
_HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "v_head", "value_head"})


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
    computes exactly what ``model`` did until the first optimiser step. ``target_modules``: see
    :func:`resolve_target_modules` (default: every linear layer but the output head).
    """
    peft = _peft()
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=resolve_target_modules(model, target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def _is_linear(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return isinstance(module, (torch.nn.Linear, Conv1D))


def linear_layers(model: torch.nn.Module) -> list[str]:
    """Qualified names of the linear layers of ``model``'s decoder: every ``nn.Linear`` (and
    GPT-2's ``Conv1D``) except the output head (``get_output_embeddings()``, ``lm_head``,
    ``embed_out``) and value or score heads."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        name for name, module in model.named_modules()
        if _is_linear(module) and module is not output and name.rsplit(".", 1)[-1] not in _HEAD_NAMES
    ]


def resolve_target_modules(model: torch.nn.Module, target_modules: Sequence[str]) -> list[str]:
    """The module names peft adapts: ``["all-linear"]`` is every layer of :func:`linear_layers`;
    other names must each name at least one of those layers (by its last component, as peft
    matches them), else one error lists the model's linear layers.

    All-linear is given to peft as the layers' last name components (``q_proj``, ``c_attn``) when
    these pick exactly the same layers (so ``adapter_config.json`` stays short), else by full name.
    """
    linear = linear_layers(model)
    short = sorted({name.rsplit(".", 1)[-1] for name in linear})
    if list(target_modules) == [ALL_LINEAR]:
        picked = [n for n, _ in model.named_modules() if n and n.rsplit(".", 1)[-1] in short]
        return short if sorted(picked) == sorted(linear) else linear
    if not target_modules:
        raise RlftError(
            f"lora.target_modules is empty: no layer would get an adapter and nothing would train. Name "
            f"layers such as {short[:3]}, or use [{ALL_LINEAR}] (the default)."
        )
    if ALL_LINEAR in target_modules:
        raise RlftError(f"lora.target_modules: {ALL_LINEAR!r} stands alone; it already names every linear layer.")
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        raise RlftError(
            f"lora.target_modules names {missing}, which are not linear layers of this model "
            f"({type(model).__name__}); its linear layers are {short}. Name some of those, or use "
            f"[{ALL_LINEAR}] (the default): every linear layer but the output head."
        )
    return list(target_modules)


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
