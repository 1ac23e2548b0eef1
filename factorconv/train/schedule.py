"""Learning-rate schedules as a pure function of the step, so resuming needs nothing but the step count.

Multistep and step schedules change the rate at whole epochs when the duration is in epochs (as
PyTorch's per-epoch schedulers do) and at exact iterations when it is in steps; cosine and one-cycle move
every iteration. A linear warmup (`warmup`, in the duration's unit) multiplies any of them.
"""

from __future__ import annotations

import math

from .config import TrainConfig

__all__ = ["lr_at"]


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for the update made at 0-based `step`."""
    unit = 1 if cfg.steps is not None else steps_per_epoch
    # position in the recipe's unit: whole epochs completed for the piecewise schedules
    position = step if cfg.steps is not None else step // steps_per_epoch
    if cfg.schedule == "constant":
        lr = cfg.lr
    elif cfg.schedule == "multistep":
        lr = cfg.lr * cfg.gamma ** sum(position >= m for m in cfg.milestones)
    elif cfg.schedule == "step":
        assert cfg.step_size is not None
        lr = cfg.lr * cfg.gamma ** math.floor(position / cfg.step_size)
    elif cfg.schedule == "cosine":
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:  # onecycle, as torch.optim.lr_scheduler.OneCycleLR with cosine annealing, div 25, final div 1e4
        start, peak, end = cfg.lr / 25, cfg.lr, cfg.lr / 25 / 1e4
        rise = max(1, round(cfg.onecycle_pct * total_steps))
        if step < rise:
            lr = peak + (start - peak) * 0.5 * (1 + math.cos(math.pi * step / rise))
        else:
            frac = min(1.0, (step - rise) / max(1, total_steps - rise))
            lr = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.warmup > 0:
        lr *= min(1.0, (step + 1) / (cfg.warmup * unit))
    return lr
