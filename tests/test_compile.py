"""torch.compile on models with every operator, train and eval: graph capture through dynamo and AOT
autograd (backend aot_eager: the traceability that inductor needs, without its minutes of C++ codegen on CPU)
on a small network holding the operator twice (strided and not), and inductor on ResNet-20 in the slow suite."""

from __future__ import annotations

import pytest
import torch

import factorconv as fc

CONVS = fc.list_convs()


def small_net(conv: str) -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        fc.create_conv2d(8, 16, 3, conv=conv, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        fc.create_conv2d(16, 16, 3, conv=conv, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def _check(conv: str, backend: str, full: bool = False) -> None:
    torch.manual_seed(0)
    model = fc.create_model("resnet20", conv=conv, width=0.25, in_chans=1) if full else small_net(conv)
    compiled = torch.compile(model, backend=backend, fullgraph=False)
    x = torch.randn(4, 1, 16, 16)
    y = torch.randint(0, 10, (4,))
    model.train()
    loss = torch.nn.functional.cross_entropy(compiled(x), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, atol=1e-5, rtol=1e-4), n
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


@pytest.mark.parametrize("conv", CONVS)
def test_compile_captures_every_operator(conv: str) -> None:
    torch.set_num_threads(1)
    torch._dynamo.reset()
    _check(conv, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("conv", CONVS)
def test_inductor_compiles_every_operator(conv: str) -> None:
    torch._dynamo.reset()
    _check(conv, "inductor", full=True)
