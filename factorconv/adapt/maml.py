"""MAML (Finn et al. 2017) on any zoo model, with `torch.func.functional_call`: an inner loop adapts every
parameter to an episode's support set by a few SGD steps; the outer loop (Adam) moves the initialisation so
that the adapted model does well on the episode's queries. `first_order` drops the second derivatives
(FOMAML: the query gradient at the adapted weights is applied to the initialisation). BatchNorm uses the
episode's batch statistics in both loops (transductive, as MAML's code does), so running statistics play no
part. ACDC's shared coefficients are one parameter wherever they are used (functional_call keeps ties), so
the inner loop adapts them once for the whole network, as the paper's MAML-ACDC does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import is_int
from .episodes import Episode, EpisodeSampler

__all__ = ["MAMLConfig", "adapt", "meta_test", "meta_train"]


@dataclass
class MAMLConfig:
    """The episodes (ways, shots, queries), the inner loop (lr, steps in meta-training and at test), the outer
    loop (meta_batch episodes per Adam step of meta_lr, iterations) and the test (episodes). Defaults are
    MAML's miniImageNet setting, except 300 iterations and 15 queries for CPU time."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    inner_lr: float = 0.01
    inner_steps: int = 5
    test_inner_steps: int = 10
    meta_batch: int = 4
    meta_lr: float = 1e-3
    iterations: int = 300
    first_order: bool = False
    test_episodes: int = 500
    seed: int = 0

    def validate(self) -> MAMLConfig:
        for name in ("ways", "shots", "queries", "inner_steps", "test_inner_steps", "meta_batch", "iterations",
                     "test_episodes"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"MAMLConfig: {name} must be a positive integer, got {value!r}")
        for name in ("inner_lr", "meta_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"MAMLConfig: {name} must be a positive number, got {value!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def adapt(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, steps: int, lr: float, *,
          create_graph: bool) -> dict[str, Tensor]:
    """`steps` SGD steps of `lr` on the loss of (x, y), from `params`; with `create_graph` the result is a
    differentiable function of `params` (second-order MAML), else each step's gradient is a constant."""
    names = list(params)
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
        params = {n: params[n] if g is None else params[n] - lr * g for n, g in zip(names, grads, strict=True)}
    return params


def _episode_loss(model: nn.Module, episode: Episode, cfg: MAMLConfig) -> tuple[Tensor, float]:
    params = dict(model.named_parameters())
    adapted = adapt(model, params, episode.support_x, episode.support_y, cfg.inner_steps, cfg.inner_lr,
                    create_graph=not cfg.first_order)
    logits = functional_call(model, adapted, (episode.query_x,))
    return F.cross_entropy(logits, episode.query_y), (logits.argmax(1) == episode.query_y).float().mean().item()


def meta_train(model: nn.Module, sampler: EpisodeSampler, cfg: MAMLConfig,
               report: Callable[[int, float, float], None] | None = None) -> list[float]:
    """Meta-train `model` in place on `sampler`'s episodes (episode k of iteration i is sampler episode
    i * meta_batch + k); returns the mean query loss of each iteration. A non-finite loss raises."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.meta_lr)
    losses = []
    for it in range(cfg.iterations):
        opt.zero_grad(set_to_none=True)
        total, acc = 0.0, 0.0
        for k in range(cfg.meta_batch):
            loss, query_acc = _episode_loss(model, sampler.episode(it * cfg.meta_batch + k), cfg)
            (loss / cfg.meta_batch).backward()
            total += loss.item() / cfg.meta_batch
            acc += query_acc / cfg.meta_batch
        if not math.isfinite(total):
            raise FloatingPointError(f"MAML: the meta-loss became {total} at iteration {it}")
        opt.step()
        losses.append(total)
        if report is not None:
            report(it, total, acc)
    return losses


def meta_test(model: nn.Module, sampler: EpisodeSampler, cfg: MAMLConfig) -> list[float]:
    """Query accuracy of each of `cfg.test_episodes` episodes after `test_inner_steps` adaptation steps from
    the meta-trained initialisation (which is left unchanged)."""
    cfg.validate()
    model.train()  # batch statistics, as in meta-training
    kept = {n: b.clone() for n, b in model.named_buffers()}  # BN's running statistics, restored after
    start = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    accuracies = []
    for k in range(cfg.test_episodes):
        episode = sampler.episode(k)
        adapted = adapt(model, start, episode.support_x, episode.support_y, cfg.test_inner_steps, cfg.inner_lr,
                        create_graph=False)
        with torch.no_grad():
            logits = functional_call(model, adapted, (episode.query_x,))
        accuracies.append((logits.argmax(1) == episode.query_y).float().mean().item())
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(kept[n])
    return accuracies
