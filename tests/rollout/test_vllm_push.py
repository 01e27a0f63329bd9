"""The vLLM weight push and the colocated engine's lifecycle, on the CPU without vllm: a stand-in for
vLLM's worker model records what ``load_weights`` receives, and a stand-in ``LLM`` records the
order of sleep, wake-up, push and generation calls."""

import copy
import inspect
import math
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from rlft.config import VLLMConfig
from rlft.errors import RlftError
from rlft.models.loading import load_policy
from rlft.models.lora import apply_lora
from rlft.models.value_head import ValueHead
from rlft.rollout.vllm_engine import VLLMRolloutEngine, sleep_on, vllm_dtype, vllm_max_model_len
from rlft.rollout.vllm_weights import (
    check_sampler_logprob_gap,
    lora_merge_refusal,
    named_weights_for_vllm,
    push_weights,
    vllm_name,
)


class WorkerModel:
    """vLLM's worker model, reduced to what the push touches: parameters under checkpoint names and
    ``load_weights(iterable)`` returning the names it loaded."""

    def __init__(self, names, calls=None, skip=()):
        self.params = {name: None for name in names}
        self.received = []  # one list of (name, dtype, tensor) per push
        self.iterables = []
        self.calls = calls if calls is not None else []
        self.skip = set(skip)

    def named_parameters(self):
        return list(self.params.items())

    def load_weights(self, weights):
        self.calls.append("load_weights")
        self.iterables.append(weights)
        push = [(name, t.dtype, t.clone()) for name, t in weights]
        self.received.append(push)
        return {name for name, _, _ in push if name in self.params and name not in self.skip}


def recorder():
    model = WorkerModel([])
    return model, model.load_weights


@pytest.fixture
def policy(tiny_model_dir):
    model, _ = load_policy(str(tiny_model_dir))
    return model


def lora_policy(policy, seed=0):
    lora = apply_lora(copy.deepcopy(policy), r=4, alpha=8.0)
    torch.manual_seed(seed)
    with torch.no_grad():  # B starts at zero: give the adapter an update so the merge shows
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    return lora


def test_push_of_a_plain_model_names_dtype_bytes_once_each(policy):
    model, load = recorder()
    stats = push_weights(load, policy, torch.bfloat16)
    assert inspect.isgenerator(model.iterables[0])  # streamed one tensor at a time, not a list
    (push,) = model.received
    names = [name for name, _, _ in push]
    assert names == [name for name, _ in policy.named_parameters()]  # every weight once, in order
    state = policy.state_dict()
    # What is left out of the state dict is only the tied output embedding (the same tensor).
    assert set(state) - set(names) == {"lm_head.weight"}
    assert policy.lm_head.weight.data_ptr() == policy.model.embed_tokens.weight.data_ptr()
    assert all(dtype == torch.bfloat16 for _, dtype, _ in push)
    for name, _, tensor in push:
        torch.testing.assert_close(tensor, state[name].to(torch.bfloat16), rtol=0, atol=0)
    assert stats.tensors == len(push)
    assert stats.bytes == sum(t.numel() * 2 for _, _, t in push) == 2 * sum(p.numel() for p in policy.parameters())
    assert stats.mib == stats.bytes / 2**20 and stats.seconds > 0
    push_weights(load, policy, torch.float32)  # a second push: once more each, in float32
    assert [n for n, _, _ in model.received[1]] == names
    assert all(dtype == torch.float32 for _, dtype, _ in model.received[1])


def test_lora_push_is_the_merged_model_under_plain_names(policy):
    lora = lora_policy(policy)
    base_before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    model, load = recorder()
    stats = push_weights(load, lora, torch.float32)
    (push,) = model.received
    names = [name for name, _, _ in push]
    assert names == [name for name, _ in policy.named_parameters()]
    assert not any(part in name for name in names for part in ("lora_", "base_layer", "base_model"))
    merged = copy.deepcopy(lora).merge_and_unload().state_dict()
    changed = 0
    for name, _, tensor in push:
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6)
        changed += not torch.equal(tensor, policy.state_dict()[name])
    assert changed >= 4 * policy.config.num_hidden_layers  # the adapted layers carry the update
    assert stats.bytes == 4 * sum(p.numel() for p in policy.parameters())
    # The live model was not merged: same base weights, adapter still separate.
    for n, p in lora.named_parameters():
        assert torch.equal(p, base_before[n]), n
    assert not any(getattr(m, "merged", False) for m in lora.modules())


def test_value_head_is_never_pushed(policy):
    policy.v_head = ValueHead(policy.config.hidden_size)  # a critic's head hung on the policy
    names = [name for name, _ in named_weights_for_vllm(policy, torch.float32)]
    assert not any("v_head" in name for name in names)
    assert len(names) == len(list(policy.named_parameters())) - 2  # its weight and bias


def test_vllm_names():
    assert vllm_name("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
    assert vllm_name("base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight") is None
    assert vllm_name("_orig_mod.model.norm.weight") == "model.norm.weight"
    assert vllm_name("model.embed_tokens.modules_to_save.default.weight") == "model.embed_tokens.weight"
    assert vllm_name("model.embed_tokens.original_module.weight") is None


def test_lora_that_cannot_be_merged_is_refused(policy):
    assert lora_merge_refusal(policy) is None and lora_merge_refusal(lora_policy(policy)) is None
    quantized = lora_policy(policy)
    layer = quantized.base_model.model.model.layers[0].self_attn.q_proj
    weight = layer.base_layer.weight
    layer.base_layer.weight = torch.nn.Parameter(weight.to(torch.int8), requires_grad=False)
    assert "quantized" in lora_merge_refusal(quantized)
    with pytest.raises(RlftError, match="quantized.*rollout.backend: hf"):
        next(named_weights_for_vllm(quantized, torch.bfloat16))
    dora = lora_policy(policy)
    dora.base_model.model.model.layers[1].mlp.up_proj.lora_variant = {"default": object()}
    assert "DoRA" in lora_merge_refusal(dora)
    config = SimpleNamespace(lora=SimpleNamespace(r=4))
    with pytest.raises(RlftError, match="lora.r=4.*DoRA.*lora.r: 0"):  # before vLLM is built
        VLLMRolloutEngine.for_recipe(config, dora)


def test_gap_check():
    check_sampler_logprob_gap(0.02, 0.1, step=3)
    check_sampler_logprob_gap(5.0, None, step=3)  # null: off
    check_sampler_logprob_gap(float("nan"), 0.1, step=3)  # non-finite steps are the harness's to stop
    check_sampler_logprob_gap(0.15, 0.1, step=3, top_p=0.9)  # -ln(0.9) = 0.105 of nucleus renormalisation
    with pytest.raises(RlftError, match=r"Step 7:.*0\.250 nats.*max_logprob_gap=0\.1.*did not land.*5312"):
        check_sampler_logprob_gap(0.25, 0.1, step=7, top_p=0.9)


def test_engine_settings_resolve():
    assert vllm_max_model_len(None, 100, 24, 512) == 128  # rounded up to vLLM's block of 16
    assert vllm_max_model_len(None, 500, 24, 512) == 512  # never past the context window
    assert vllm_max_model_len(None, None, 24, 512) == 512
    assert vllm_max_model_len(200, None, 24, 512) == 200
    with pytest.raises(RlftError, match="longer than the model's context window"):
        vllm_max_model_len(600, None, 24, 512)
    assert vllm_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert vllm_dtype("float16", torch.device("cpu")) == torch.float16
    assert sleep_on("auto") and sleep_on(True) and not sleep_on(False)


# --- the engine's lifecycle, with a stand-in LLM --------------------------------------------------


class Params(SimpleNamespace):
    """vllm.SamplingParams stand-in: keeps its keyword arguments."""


class FakeLLM:
    """Records the calls the engine makes; generates fixed tokens with log-probs."""

    def __init__(self, names, skip=()):
        self.calls = []
        self.model = WorkerModel(names, self.calls, skip)
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=self.model))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=worker)))
        self.params = []

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags):
        self.calls.append(f"wake_up({','.join(tags)})")

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def generate(self, prompts, params, use_tqdm):
        self.calls.append("generate")
        self.params.append(params)
        outs = []
        for row, prompt in enumerate(prompts):
            tokens = [5 + row, 7, 2][: 1 + row % 3]
            logprobs = [{t: SimpleNamespace(logprob=-0.5 * (i + 1))} for i, t in enumerate(tokens)]
            assert prompt["prompt_token_ids"]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, logprobs=logprobs)]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = Params
    monkeypatch.setitem(sys.modules, "vllm", module)


def engine_for(policy, **settings):
    llm = FakeLLM([name for name, _ in policy.named_parameters()])
    engine = VLLMRolloutEngine("unused", VLLMConfig(dtype="bfloat16", **settings), device="cpu", llm=llm)
    engine.push_weights(policy)  # as the recipe's builder does: push, then sleep
    engine.sleep()
    llm.calls.clear()
    return engine, llm


def sample(engine, policy):
    ids = torch.tensor([[0, 3, 4], [3, 4, 4], [0, 0, 4]])
    return engine.sample(policy, ids, (ids > 0).float(), eos_token_id=2, pad_token_id=0, max_new_tokens=3,
                         temperature=0.7, generator=torch.Generator().manual_seed(0))


STEP = ["wake_up(weights)", "load_weights", "reset_prefix_cache", "wake_up(kv_cache)", "generate"]


@pytest.mark.parametrize("level", [1, 2])
def test_a_step_wakes_weights_pushes_wakes_cache_generates_sleeps(policy, fake_vllm, level):
    engine, llm = engine_for(policy, sleep_level=level)
    assert engine.push_weights(policy) == 2
    rollout = sample(engine, policy)
    assert llm.calls == [*STEP, f"sleep({level})"]
    assert all(dtype == torch.bfloat16 for _, dtype, _ in llm.model.received[-1])
    torch.testing.assert_close(rollout.completion_ids, torch.tensor([[5, 0, 0], [6, 7, 0], [7, 7, 2]]))
    torch.testing.assert_close(rollout.completion_mask, torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]]))
    torch.testing.assert_close(rollout.logprobs, torch.tensor([[-0.5, 0, 0], [-0.5, -1.0, 0], [-0.5, -1.0, -1.5]]))
    seeds = [p.seed for p in llm.params[0]]
    assert len(set(seeds)) == 3  # each row its own draw: a group's copies of a prompt differ
    assert all(p.temperature == 0.7 and p.logprobs == 0 and p.stop_token_ids == [2] for p in llm.params[0])
    metrics = engine.metrics()
    assert metrics["distributed/weights_version"] == 2.0
    assert metrics["rollout/weight_push_mib"] == pytest.approx(2 * sum(p.numel() for p in policy.parameters()) / 2**20)
    assert metrics["perf/weight_sync_s"] > 0


def test_level_2_without_a_push_pushes_the_policy_never_reloads_from_disk(policy, fake_vllm):
    engine, llm = engine_for(policy, sleep_level=2)
    sample(engine, policy)  # the weights were dropped: a full push from the policy it is handed
    assert llm.calls == [*STEP, "sleep(2)"]
    sample(engine, policy)
    assert llm.calls.count("load_weights") == 2


def test_level_1_without_a_push_wakes_the_offloaded_weights(policy, fake_vllm):
    engine, llm = engine_for(policy, sleep_level=1)
    sample(engine, policy)
    assert llm.calls == ["wake_up(weights)", "wake_up(kv_cache)", "generate", "sleep(1)"]


def test_sleep_off_never_sleeps(policy, fake_vllm):
    engine, llm = engine_for(policy, sleep=False)
    engine.push_weights(policy)
    sample(engine, policy)
    assert llm.calls == ["load_weights", "reset_prefix_cache", "generate"]


def test_a_push_that_leaves_vllm_weights_unloaded_stops(policy):
    names = [name for name, _ in policy.named_parameters()]
    llm = FakeLLM(names, skip=[names[3]])
    engine = VLLMRolloutEngine("unused", VLLMConfig(), device="cpu", llm=llm)
    with pytest.raises(RlftError, match=f"left 1 of vLLM's parameters unloaded \\({names[3]}"):
        engine.push_weights(policy)
    assert math.isclose(engine.metrics()["distributed/weights_version"], 0.0)
