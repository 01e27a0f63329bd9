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
