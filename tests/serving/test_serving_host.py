"""The model host on the tiny model: batching, seeds, hot swaps, per-user adapters, bad input."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rlft.errors import RlftError
from rlft.models.loading import load_policy
from rlft.serving.chat import chat_prompt
from rlft.serving.host import GenerationRequest, InvalidRequestError, ModelHost

pytest.importorskip("peft", reason="per-user adapters need peft (rlft[scale])")


@pytest.fixture
def host(tiny_model_dir):
    """A host on the tiny model with its weights spread out: a freshly initialised model only
    repeats the prompt's last token under greedy decoding, these answers depend on the whole prompt."""
    model, tokenizer = load_policy(str(tiny_model_dir))
    with ModelHost(model, tokenizer, version=1, adapter_r=4, max_wait_ms=200) as served:
        served.swap(1, _perturbed(served.base_state_dict(), seed=0, scale=2.0))
        yield served


def _perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.numel() > 1 else v.clone()
        for k, v in state.items()
    }


def _random_lora(host: ModelHost, seed: int) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    g = torch.Generator().manual_seed(seed)
    return {k: 0.3 * torch.randn(v.shape, generator=g) for k, v in get_peft_model_state_dict(host.model).items()}


def test_queued_requests_share_a_batch_and_answer_as_if_alone(host):
    """Eight greedy requests queued at once are one batch of 16 rows (n=2 each), and each gets the
    tokens it gets when sampled alone: left padding and the per-request split are right."""
    # Prompts of different lengths (left padding) that end alike (the answer depends on the rest).
    requests = [GenerationRequest(f"{i * 'ab '}{i} + {7 - i} = x", max_tokens=6, temperature=0, n=2) for i in range(8)]
    futures = [host.submit(r) for r in requests]
    together = [f.result(timeout=60) for f in futures]
    assert host.batches == 1
    alone = [host.generate(r) for r in requests]
    assert host.batches == 9
    for t, a in zip(together, alone, strict=True):
        assert t.texts == a.texts and len(t.texts) == 2
        assert t.completion_tokens == a.completion_tokens == [6, 6]
        assert t.finish_reasons == ["length", "length"]
        assert t.model_version == 1 and t.adapter is None
    assert len({t.texts[0] for t in together}) > 1  # different prompts, different answers
    with ThreadPoolExecutor(8) as pool:  # from eight threads at once: the same answers
        threaded = list(pool.map(host.generate, requests))
    assert [t.texts for t in threaded] == [a.texts for a in alone]


def test_requests_with_other_settings_or_a_seed_are_other_batches(host):
    """Requests waiting together share a batch only with the same settings, and a seeded one is
    alone. Greedy and seeded answers are what they are alone; an unseeded sample's length is only
    bounded (it may stop at EOS), so nothing else is asserted about it."""
    requests = [
        GenerationRequest("a", max_tokens=3, temperature=0), GenerationRequest("b", max_tokens=3, temperature=0),
        GenerationRequest("c", max_tokens=4, temperature=0), GenerationRequest("d", max_tokens=3, temperature=0.5),
        GenerationRequest("e", max_tokens=3, seed=1), GenerationRequest("f", max_tokens=3, seed=1),
    ]  # fmt: skip
    with host._lock:  # the worker forms batches under this lock: all six wait before the first
        futures = [host.submit(r) for r in requests]
    results = [f.result(timeout=60) for f in futures]
    assert host.batches == 5  # {a, b}, {c}, {d}, {e}, {f}
    alone = {r.prompt: host.generate(r) for r in requests if r.temperature == 0 or r.seed is not None}
    for request, result in zip(requests, results, strict=True):
        [tokens], [reason] = result.completion_tokens, result.finish_reasons
        assert 1 <= tokens <= request.max_tokens and (reason == "length") == (tokens == request.max_tokens)
        if request.prompt in alone:
            assert result.texts == alone[request.prompt].texts


@pytest.mark.parametrize("fair_share", [True, False])
def test_a_small_request_waits_for_one_batch_of_a_big_one_not_all(tiny_model_dir, fair_share):
    """A big request (one group: four requests of n=4) and then a small one: with fair share the
    small one is served after the big one's first batch; in arrival order, after all four."""
    model, tokenizer = load_policy(str(tiny_model_dir))
    with ModelHost(model, tokenizer, version=1, max_batch_size=4, fair_share=fair_share) as host:
        done: list[str] = []
        with host._lock:  # everything is waiting before the first batch is formed
            futures = [host.submit(GenerationRequest(f"{i} + 1 = ", max_tokens=6, n=4), group="big") for i in range(4)]
            futures.append(host.submit(GenerationRequest("2 + 2 = ", max_tokens=2)))
            for name, future in zip(["big0", "big1", "big2", "big3", "small"], futures, strict=True):
                future.add_done_callback(lambda _, name=name: done.append(name))
        answers = [f.result(timeout=60) for f in futures]
        assert host.batches == 5 and [len(a.texts) for a in answers] == [4, 4, 4, 4, 1]
    # done callbacks run in the worker, in the order the batches finished
    expected = ["big0", "small", "big1", "big2", "big3"] if fair_share else ["big0", "big1", "big2", "big3", "small"]
    assert done == expected


def test_groups_with_the_same_settings_take_turns_within_a_batch(tiny_model_dir):
    """Two groups of greedy requests with the same settings: each batch takes one request from each
    group in turn, and every answer is the one it gets alone."""
    model, tokenizer = load_policy(str(tiny_model_dir))
    with ModelHost(model, tokenizer, version=1, max_batch_size=4) as host:
        requests = {g: [GenerationRequest(f"{g} {i} =", max_tokens=4, temperature=0, n=2) for i in range(3)] for g in "AB"}
        done: list[str] = []
        with host._lock:
            futures = {(g, i): host.submit(r, group=g) for g in "AB" for i, r in enumerate(requests[g])}
            for (g, i), future in futures.items():
                future.add_done_callback(lambda _, tag=f"{g}{i}": done.append(tag))
        together = {k: f.result(timeout=60) for k, f in futures.items()}
        assert host.batches == 3
        # A0 starts the first batch and B0 joins it; B goes first next, then A's turn again.
        assert [set(done[i : i + 2]) for i in (0, 2, 4)] == [{"A0", "B0"}, {"B1", "A1"}, {"A2", "B2"}]
        for (g, i), answer in together.items():
            assert answer.texts == host.generate(requests[g][i]).texts


def test_a_seed_gives_the_same_text_whatever_else_is_served_and_after_swapping_back(host):
    prompt = chat_prompt(host.tokenizer, [{"role": "user", "content": "7 + 5 ="}])
    seeded = GenerationRequest(prompt, max_tokens=12, seed=1234)
    first = host.generate(seeded)
    crowd = [host.submit(GenerationRequest(f"{i}", max_tokens=5, n=3)) for i in range(4)]
    again = host.submit(seeded)
    assert again.result(timeout=60).texts == first.texts
    assert all(len(f.result(timeout=60).texts) == 3 for f in crowd)
    assert host.generate(GenerationRequest(prompt, max_tokens=12, seed=99)).texts != first.texts

    v1 = host.base_state_dict()
    host.swap(2, _perturbed(v1, seed=0))
    swapped = host.generate(seeded)
    assert (swapped.model_version, host.version) == (2, 2)
    assert swapped.texts != first.texts
    host.swap(1, v1)
    back = host.generate(seeded)
    assert (back.model_version, back.texts) == (1, first.texts)
    assert all(torch.equal(v1[k], v) for k, v in host.base_state_dict().items())


def test_a_bad_swap_changes_nothing(host):
    v1 = host.base_state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    missing = {k: v for k, v in v1.items() if k != name}
    wrong_shape = {**v1, name: v1[name][:, :-1]}
    nan = {**v1, name: torch.full_like(v1[name], float("nan"))}
    extra = {**v1, "model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 4)}
    for bad, says in ((missing, "missing"), (wrong_shape, "shape"), (nan, "NaN"), (extra, "unexpected")):
        with pytest.raises(RlftError, match=says):
            host.swap(7, bad)
    assert host.version == 1
    assert all(torch.equal(v1[k], v) for k, v in host.base_state_dict().items())


def test_an_adapter_changes_its_users_answers_only(host):
    prompt = "3 + 4 = "
    shared = host.generate(GenerationRequest(prompt, max_tokens=10, seed=5))
    host.set_adapter("alice", _random_lora(host, seed=1))
    assert host.adapters() == ["alice"]
    alice = host.generate(GenerationRequest(prompt, max_tokens=10, seed=5, adapter="alice"))
    bob = host.generate(GenerationRequest(prompt, max_tokens=10, seed=5, adapter="bob"))
    assert (alice.adapter, bob.adapter) == ("alice", None)
    assert alice.texts != shared.texts
    assert bob.texts == shared.texts
    # Mixed in one queue, each request still gets its own model.
    mixed = [host.submit(GenerationRequest(prompt, max_tokens=10, temperature=0, adapter=u)) for u in ("alice", "bob", None, "alice")]
    texts = [f.result(timeout=60).texts[0] for f in mixed]
    solo_alice = host.generate(GenerationRequest(prompt, max_tokens=10, temperature=0, adapter="alice")).texts[0]
    solo_shared = host.generate(GenerationRequest(prompt, max_tokens=10, temperature=0)).texts[0]
    assert solo_alice != solo_shared
    assert texts == [solo_alice, solo_shared, solo_shared, solo_alice]
    host.set_adapter("alice", None)
    removed = host.generate(GenerationRequest(prompt, max_tokens=10, seed=5, adapter="alice"))
    assert (removed.adapter, removed.texts) == (None, shared.texts)


def test_adapter_that_does_not_fit_is_refused(host, tiny_model_dir):
    lora = _random_lora(host, seed=1)
    name = next(iter(lora))
    with pytest.raises(RlftError, match="does not fit"):
        host.set_adapter("alice", {**lora, name: lora[name][:1]})
    with pytest.raises(RlftError, match="does not fit"):
        host.set_adapter("alice", {k: v for k, v in lora.items() if k != name})
    assert host.adapters() == []
    model, tokenizer = load_policy(str(tiny_model_dir))
    with ModelHost(model, tokenizer, version=1) as plain, pytest.raises(RlftError, match="adapter_r"):
        plain.set_adapter("alice", lora)


def test_eos_ends_an_answer_with_finish_reason_stop(host):
    """With the final norm zeroed every logit is 0, so greedy decoding picks token 0, the tiny
    tokenizer's EOS: the answer is empty, one token long, and stopped."""
    assert host.tokenizer.eos_token_id == 0, "the test relies on the tiny tokenizer's EOS being id 0"
    state = host.base_state_dict()
    host.swap(2, {**state, "model.norm.weight": torch.zeros_like(state["model.norm.weight"])})
    out = host.generate(GenerationRequest("1 + 1 = ", max_tokens=5, temperature=0, n=2))
    assert (out.texts, out.completion_tokens, out.finish_reasons) == (["", ""], [1, 1], ["stop", "stop"])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": 10**6}, "context window is 512"),
        ({"temperature": -0.1}, "temperature must be a finite number >= 0"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"n": 0}, "n must be an integer from 1 to 16"),
        ({"n": 17}, "n must be an integer from 1 to 16"),
        ({"top_p": 0.0}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"prompt": ""}, "prompt is empty"),
    ],
)
def test_bad_requests_are_refused_before_they_are_queued(host, change, says):
    request = GenerationRequest(**{"prompt": "1 + 1 = ", **change})
    with pytest.raises(InvalidRequestError, match=says) as caught:
        host.submit(request)
    assert isinstance(caught.value, ValueError)
    assert host.batches == 0


def test_from_folder_run_folder_adapter_and_clear_errors(tiny_model_dir, tmp_path):
    from rlft.models.lora import apply_lora, save_adapter

    # A LoRA run's final_model/ is merged into its base: the same answers as the base with the
    # same weights in a user's adapter slot.
    policy = apply_lora(load_policy(str(tiny_model_dir))[0], r=4)
    with ModelHost.from_folder(tiny_model_dir, adapter_r=4) as base:
        lora = _random_lora(base, seed=3)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy, lora)
        run = tmp_path / "run"
        save_adapter(policy, run / "final_model", base_model=tiny_model_dir)
        (run / "config.yaml").write_text("task: {}\n")
        base.set_adapter("u", lora)
        request = GenerationRequest("2 + 9 = ", max_tokens=8, temperature=0)
        expected = base.generate(GenerationRequest("2 + 9 = ", max_tokens=8, temperature=0, adapter="u"))
        with ModelHost.from_folder(run, version=3) as served:
            got = served.generate(request)
        assert (got.texts, got.model_version) == (expected.texts, 3)
        assert base.generate(request).texts != expected.texts

    with pytest.raises(RlftError, match="does not exist"):
        ModelHost.from_folder(tmp_path / "nowhere")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.yaml").write_text("task: {}\n")
    with pytest.raises(RlftError, match="no final_model"):
        ModelHost.from_folder(tmp_path / "empty_run")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, bare / f.name)
    with pytest.raises(RlftError, match="no tokenizer"):
        ModelHost.from_folder(bare)
