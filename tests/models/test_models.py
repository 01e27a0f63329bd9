import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlft.errors import RlftError
from rlft.models.loading import frozen_reference, load_policy
from rlft.tasks import ArithmeticTask


def test_tiny_model_reloads_in_plain_transformers_with_same_ids(tiny_model_dir):
    from rlft.models.tiny import train_tokenizer

    trained = train_tokenizer(ArithmeticTask().corpus(500), 320)
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in ["12+34=46", "7*8=56", "hello world 3.14", "99-100=-1"]:
        assert reloaded(text).input_ids == trained(text).input_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert json.loads((tiny_model_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_digits_are_single_tokens(tiny_model_dir):
    _, tok = load_policy(str(tiny_model_dir))
    assert tok.convert_ids_to_tokens(tok("123+45=").input_ids) == ["1", "2", "3", "+", "4", "5", "="]
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RlftError, match="does not exist"):
        load_policy(str(tmp_path / "nope"))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(RlftError, match="no config.json"):
        load_policy(str(tmp_path))


def test_model_without_tokenizer_is_a_clear_error(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(RlftError, match="tokenizer"):
        load_policy(str(tmp_path / "m"))


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RlftError, match="Could not load"):
        load_policy("no-such-org/no-such-model")


def test_reference_is_frozen_copy(tiny_model_dir):
    model, _ = load_policy(str(tiny_model_dir))
    ref = frozen_reference(model)
    assert all(not p.requires_grad for p in ref.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(ref.parameters()))
