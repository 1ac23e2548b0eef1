"""One few-shot experiment end to end: a zoo model with an operator, meta-trained by MAML on episodes of some
classes of a data set (with rotated copies as extra classes) and tested on episodes of the held-out classes;
the result holds every test episode's accuracy (the same episodes for every model with the same seed, so two
results can be compared episode by episode) with the mean and its 95% interval."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..accounting import count_params
from ..data import load_dataset
from ..registry import create_model
from ..study.stats import Summary, paired_difference, summarize
from .episodes import EpisodeSampler, class_pool
from .maml import MAMLConfig, meta_test, meta_train

__all__ = ["compare_episodes", "run_fewshot"]


def run_fewshot(model: str, conv: str | None, cfg: MAMLConfig, *, conv_kwargs: dict[str, Any] | None = None,
                data: str = "fashion-mnist", data_dir: str | None = None,
                train_classes: tuple[int, ...] = (0, 1, 2, 3, 4), test_classes: tuple[int, ...] = (5, 6, 7, 8, 9),
                rotations: bool = True, threads: int | None = 1) -> dict[str, Any]:
    """Meta-train `model` (with operator `conv`) on `train_classes` of `data`'s training split and test it on
    `test_classes` of its test split; returns the config, counts, seconds, the meta-training loss trace and
    the test episodes' accuracies with their summary (percent)."""
    cfg.validate()
    if set(train_classes) & set(test_classes):
        raise ValueError(f"few-shot: meta-test classes {sorted(set(train_classes) & set(test_classes))} are also "
                         "meta-training classes")
    if threads is not None:
        torch.set_num_threads(threads)
    train_set, test_set = load_dataset(data, "train", data_dir), load_dataset(data, "test", data_dir)
    mean, std = train_set.mean_std()
    train_pool = class_pool(train_set, list(train_classes), rotations=rotations, mean=mean, std=std)
    test_pool = class_pool(test_set, list(test_classes), mean=mean, std=std)
    kw = dict(ways=cfg.ways, shots=cfg.shots, queries=cfg.queries)
    train_episodes = EpisodeSampler(*train_pool, **kw, seed=cfg.seed)
    test_episodes = EpisodeSampler(*test_pool, **kw, seed=10_000)  # one fixed set of test episodes
    torch.manual_seed(cfg.seed)
    net = create_model(model, conv=conv, num_classes=cfg.ways, in_chans=train_set.channels,
                       conv_kwargs=conv_kwargs)
    t = time.perf_counter()
    losses = meta_train(net, train_episodes, cfg)
    train_seconds = time.perf_counter() - t
    t = time.perf_counter()
    accs = [100 * a for a in meta_test(net, test_episodes, cfg)]
    return {"model": model, "conv": conv or "conv", "conv_kwargs": conv_kwargs or {}, "data": data,
            "train_classes": list(train_classes), "test_classes": list(test_classes), "rotations": rotations,
            "config": cfg.to_dict(), "params": count_params(net), "train_seconds": train_seconds,
            "test_seconds": time.perf_counter() - t, "meta_losses": losses, "episode_accuracy": accs,
            "accuracy": summarize(accs).to_dict()}


def compare_episodes(a: dict[str, Any], b: dict[str, Any]) -> Summary:
    """a minus b, episode by episode (both tested on the same episodes): mean and 95% interval, percent
    (`factorconv.study.stats.verdict` reads it)."""
    if a["config"]["test_episodes"] != b["config"]["test_episodes"] or \
            (a["config"]["ways"], a["config"]["shots"]) != (b["config"]["ways"], b["config"]["shots"]):
        raise ValueError("few-shot results can be paired only over the same test episodes")
    return paired_difference(a["episode_accuracy"], b["episode_accuracy"])
