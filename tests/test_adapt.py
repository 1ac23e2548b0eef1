"""Few-shot adaptation: episodes (deterministic, balanced, rotated classes), MAML's inner loop against hand
SGD, second- against first-order meta-gradients, ACDC's shared coefficients adapted once, meta-training that
learns a toy pool, and a meta-test that leaves the initialisation as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import factorconv as fc
from factorconv.adapt import EpisodeSampler, MAMLConfig, adapt, class_pool, meta_test, meta_train
from factorconv.adapt.maml import _episode_loss
from factorconv.data import synthetic


def test_episodes_are_balanced_deterministic_and_rotations_are_classes() -> None:
    data = synthetic("train")
    images, labels = class_pool(data, [0, 3], rotations=True, mean=[0.5], std=[0.25])
    assert sorted(labels.unique().tolist()) == list(range(8))
    first = images[labels == 0][0]
    assert torch.equal(images[labels == 1][0], torch.rot90(first, 1, dims=(1, 2)))
    sampler = EpisodeSampler(images, labels, ways=5, shots=2, queries=3, seed=1)
    a, b = sampler.episode(7), sampler.episode(7)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert a.support_x.shape == (10, 1, 16, 16) and a.query_y.tolist() == [i for i in range(5) for _ in range(3)]
    assert not torch.equal(sampler.episode(8).support_x, a.support_x)
    with pytest.raises(ValueError, match="10-way episodes need 10 classes"):
        EpisodeSampler(images, labels, ways=10, shots=1, queries=1)


def test_the_inner_loop_is_plain_sgd() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    params = dict(model.named_parameters())
    adapted = adapt(model, params, x, y, steps=2, lr=0.1, create_graph=False)
    manual = nn.Linear(4, 3)
    manual.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(manual.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(manual(x), y).backward()
        opt.step()
    for name, p in manual.named_parameters():
        torch.testing.assert_close(adapted[name], p, rtol=1e-6, atol=1e-7)


def _episodes() -> EpisodeSampler:
    return EpisodeSampler(*class_pool(synthetic("train"), list(range(10))), ways=5, shots=1, queries=4, seed=0)


def test_second_order_meta_gradient_differs_from_first_order() -> None:
    torch.manual_seed(0)
    model = fc.create_model("conv4", num_classes=5, in_chans=1, width=0.25)
    episode = _episodes().episode(0)
    grads = {}
    for first_order in (True, False):
        model.zero_grad()
        loss, _ = _episode_loss(model, episode, MAMLConfig(inner_steps=2, inner_lr=0.1, first_order=first_order))
        loss.backward()
        grads[first_order] = model.features[0][0].weight.grad.clone()
    assert grads[True].abs().sum() > 0 and not torch.allclose(grads[True], grads[False])


def test_acdc_net_coefficients_are_one_parameter_in_the_inner_loop() -> None:
    torch.manual_seed(0)
    model = fc.create_model("conv4", conv="acdc", num_classes=5, in_chans=1, width=0.25,
                            conv_kwargs={"share": "net", "atoms": 4})
    shared = [n for n, _ in model.named_parameters() if "coefficients" in n]
    assert len(shared) == 1  # one bank for the network: one entry adapted, and tied wherever it is used
    episode = _episodes().episode(0)
    params = dict(model.named_parameters())
    adapted = adapt(model, params, episode.support_x, episode.support_y, 1, 0.1, create_graph=False)
    assert not torch.equal(adapted[shared[0]], params[shared[0]])
    atoms = [n for n in params if n.endswith("atoms")]
    assert atoms and all(not torch.equal(adapted[n], params[n]) for n in atoms)


def test_meta_training_learns_and_meta_testing_changes_nothing() -> None:
    torch.manual_seed(0)
    model = fc.create_model("conv4", num_classes=5, in_chans=1, width=0.5)
    sampler = _episodes()
    cfg = MAMLConfig(inner_steps=1, test_inner_steps=3, inner_lr=0.1, meta_batch=2, iterations=40,
                     first_order=True, test_episodes=20, meta_lr=3e-3)
    losses = meta_train(model, sampler, cfg)
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    accs = meta_test(model, sampler, cfg)
    assert len(accs) == 20 and sum(accs) / 20 > 0.4  # 5-way chance: 0.2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="inner_steps must be a positive integer"):
        MAMLConfig(inner_steps=0).validate()


def test_the_few_shot_backbones_count_as_built_by_hand() -> None:
    """Conv-4 (MAML's, 32 channels) for 5 ways on 1x28x28: 3x3 convs 1->32 and 3 x 32->32 without bias, four
    BatchNorms (64 each), FC 32->5 with bias; Conv-8 has four more 32->32 blocks."""
    block = 32 * 32 * 9 + 64
    conv4 = fc.create_model("conv4", num_classes=5, in_chans=1)
    conv8 = fc.create_model("conv8", num_classes=5, in_chans=1)
    assert sum(p.numel() for p in conv4.parameters()) == (9 * 32 + 64) + 3 * block + (32 * 5 + 5) == 28_357
    assert sum(p.numel() for p in conv8.parameters()) == 28_357 + 4 * block == 65_477
    assert conv4(torch.randn(2, 1, 28, 28)).shape == (2, 5)
