"""The trainers' optimiser: fused AdamW where PyTorch has the kernel, AdamW's numbers either way."""

import torch

from rlft.common.optim import adamw


def _train(optimizer_factory, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    optimizer = optimizer_factory(layer.parameters())
    for i in range(steps):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(i))
        loss = layer(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in layer.parameters()]


def test_adamw_is_fused_on_cpu_and_matches_plain_adamw():
    fused = adamw(torch.nn.Linear(2, 2).parameters(), 1e-3)
    assert fused.param_groups[0]["fused"] is True
    ours = _train(lambda params: adamw(params, 1e-2, weight_decay=0.1))
    plain = _train(lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1))
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    untouched = _train(lambda params: adamw(params, 1e-2), steps=0)
    assert any(not torch.equal(a, b) for a, b in zip(ours, untouched, strict=True))


def test_adamw_falls_back_when_parameters_span_devices_or_are_not_float():
    meta = torch.nn.Parameter(torch.zeros(2, device="meta"))
    cpu = torch.nn.Parameter(torch.zeros(2))
    assert adamw([meta, cpu], 1e-3).param_groups[0]["fused"] is None


def test_float32_master_weights_keep_updates_that_bf16_rounds_away():
    """A bf16 weight of 1.0 cannot move by 1e-4 (its spacing near 1 is 2^-7): AdamW in bf16 leaves
    it at 1.0 for ever; through float32 master copies the updates add up and reach the weight."""
    from rlft.common.optim import Float32MasterAdamW, adamw

    def train(float32_master: bool) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
        weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
        optimizer = adamw([weight], lr=1e-4, float32_master=float32_master)
        for _ in range(200):
            optimizer.zero_grad()
            (weight.float() * -1.0).sum().backward()  # gradient -1: AdamW moves each weight up by ~lr
            optimizer.step()
        return weight, optimizer

    plain, _ = train(False)
    master, optimizer = train(True)
    assert torch.equal(plain, torch.ones(4, dtype=torch.bfloat16))
    assert isinstance(optimizer, Float32MasterAdamW) and master.dtype == torch.bfloat16
    assert torch.allclose(optimizer.masters[0], torch.full((4,), 1.02), atol=1e-3)  # 200 x 1e-4
    assert torch.equal(master, optimizer.masters[0].to(torch.bfloat16))  # the weight is its rounded copy
    assert (master > 1).all()


def test_float32_master_state_resumes_from_the_masters_not_the_rounded_weights():
    from rlft.common.optim import adamw

    weight = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    optimizer = adamw([weight], lr=1e-3, float32_master=True)
    for _ in range(3):
        optimizer.zero_grad()
        (weight.float() * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
        optimizer.step()
    saved = optimizer.state_dict()
    again = torch.nn.Parameter(weight.detach().clone())
    resumed = adamw([again], lr=1e-3, float32_master=True)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.masters[0], optimizer.masters[0])
    assert not torch.equal(resumed.masters[0], again.detach().float())  # the rounded weight is not the master
    assert torch.equal(resumed.state_dict()["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])


def test_float32_master_is_plain_adamw_for_float32_weights():
    from rlft.common.optim import Float32MasterAdamW, adamw

    assert not isinstance(adamw([torch.nn.Parameter(torch.ones(2))], lr=0.1, float32_master=True), Float32MasterAdamW)
