"""Named training recipes: the five papers' CIFAR recipes as they state them, plus `quick`, `study`,
`study-long` and `smoke` sized for 2 CPU cores. A preset sets only the fields it names; the rest keep
TrainConfig's defaults, and `--set` / a config file override either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Preset", "list_presets", "preset_values"]


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict[str, Any] = field(default_factory=dict)


_CIFAR_AUGMENT = {"augment_pad": 4, "augment_flip": True}

PRESETS: dict[str, Preset] = {
    "osep": Preset(
        "optimized separable convolution (001, sec. 5): SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 200 epochs, "
        "x0.1 at 100 and 150",
        {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "batch_size": 128, "epochs": 200.0,
         "steps": None, "schedule": "multistep", "milestones": [100.0, 150.0], "gamma": 0.1, **_CIFAR_AUGMENT},
    ),
    "bdsc": Preset(
        "BDSC (000, Setup): SGD Nesterov 0.1, momentum 0.9, wd 1e-4, batch 64, 180k iterations, x0.1 every 50k",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "batch_size": 64, "steps": 180_000,
         "schedule": "step", "step_size": 50_000.0, "gamma": 0.1, **_CIFAR_AUGMENT},
    ),
    "igcv2": Preset(
        "IGCV2 (002, Training settings): SGD Nesterov 0.1, momentum 0.9, wd 1e-4, batch 64, 400 epochs, x0.1 at "
        "200, 300 and 350",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "batch_size": 64, "epochs": 400.0,
         "steps": None, "schedule": "multistep", "milestones": [200.0, 300.0, 350.0], "gamma": 0.1,
         **_CIFAR_AUGMENT},
    ),
    "acdc": Preset(
        "ACDC (003, Training details): SGD 0.1, wd 1e-4, 350 epochs, x0.1 at 150 and 250 (batch 128 and "
        "momentum 0.9: the paper does not say)",
        {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "batch_size": 128, "epochs": 350.0,
         "steps": None, "schedule": "multistep", "milestones": [150.0, 250.0], "gamma": 0.1, **_CIFAR_AUGMENT},
    ),
    "doconv": Preset(
        "DO-Conv (004) follows He et al.: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 64k iterations, x0.1 at 32k "
        "and 48k",
        {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "batch_size": 128, "steps": 64_000,
         "schedule": "multistep", "milestones": [32_000.0, 48_000.0], "gamma": 0.1, **_CIFAR_AUGMENT},
    ),
    "quick": Preset(
        "a few minutes on 2 CPU cores: 2 epochs, batch 128, one-cycle SGD (peak 0.2, Nesterov), wd 5e-4, label "
        "smoothing 0.1, flips only, bfloat16 autocast where the hardware has it (amp=native)",
        {"lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "batch_size": 128, "epochs": 2.0,
         "steps": None, "schedule": "onecycle", "label_smoothing": 0.1, "augment_pad": 0, "augment_flip": True,
         "amp": "native", "log_every": 50},
    ),
    "study": Preset(
        "the default of `factorconv compare`, chosen from measurements (benchmarks/results/recipe_frontier.md): "
        "360 steps of batch 32 (11,520 images), one-cycle Nesterov SGD peak 0.05, wd 5e-4, flips, float32 on "
        "every CPU, the same 3,000 test images for every run",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "batch_size": 32, "steps": 360,
         "schedule": "onecycle", "label_smoothing": 0.0, "augment_pad": 0, "augment_flip": True, "amp": "off",
         "test_subset": 3000, "log_every": 40},
    ),
    "study-long": Preset(
        "the default study's recipe eight times as long, scored on the full test set: 2,880 steps of batch 32 "
        "(92,160 images, one and a half epochs); with --budget size=210k --seeds 5 every default operator's seed "
        "std is <= 0.5 point (benchmarks/results/compare_study_long_size.md)",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "batch_size": 32, "steps": 2880,
         "schedule": "onecycle", "label_smoothing": 0.0, "augment_pad": 0, "augment_flip": True, "amp": "off",
         "test_subset": None, "log_every": 320},
    ),
    "smoke": Preset(
        "seconds: 2 epochs on 512 training and 256 test images, batch 64, cosine SGD 0.05",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 64, "epochs": 2.0, "steps": None,
         "schedule": "cosine", "train_subset": 512, "test_subset": 256, "log_every": 4},
    ),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset_values(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(list_presets())}")
    return {**PRESETS[name].values, "preset": name}
