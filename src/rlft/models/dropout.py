"""Dropout off in a model that trains in train mode.

RL fine-tuning compares log-probabilities of one policy computed at different times: the sampler's
(eval mode), the update's (train mode), the reference's (eval mode). With dropout on in the update,
the ratio and the KL measure dropout noise: a GPT-2 or OPT checkpoint (dropout 0.1) shows a step-1
KL of ~0.08 against an identical reference, and PPO clips ~30% of tokens at a learning rate of 0.
TRL and OpenRLHF turn dropout off for the same reason. The model stays in train mode (gradient
checkpointing in transformers needs it); only the dropout probabilities become 0.
"""

from __future__ import annotations

import torch

# peft's adapter dropout is the recipe's own explicit setting (lora.dropout): it is kept.
_KEPT = ("lora_dropout",)


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability in ``model`` to 0, in place; returns ``model``.

    Two kinds: ``nn.Dropout`` modules (``p``), and the float attributes transformers' attention
    and blocks keep and pass to ``F.dropout`` or ``scaled_dot_product_attention`` only when
    ``self.training`` (Llama's ``attention_dropout``, OPT's ``dropout``, ``layerdrop``...): any
    float attribute whose name contains ``drop``. After it, a train-mode forward equals the
    eval-mode forward (tested on GPT-2 and OPT). LoRA's own ``lora_dropout`` is left as it is.
    """
    for name, module in model.named_modules():
        if any(part in _KEPT for part in name.split(".")):
            continue
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for attribute, value in list(vars(module).items()):
            if "drop" in attribute.lower() and isinstance(value, float):
                setattr(module, attribute, 0.0)
    return model
