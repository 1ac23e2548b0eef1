"""Training: the config and the papers' recipes as presets, the engine (single process or torchrun DDP),
atomic checkpoints with exact resume, and per-run result files."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import SCHEDULES, TrainConfig, apply_overrides, load_config_file
from .engine import (
    RESUME_SAFE_FIELDS,
    Callback,
    DivergedError,
    PrunedError,
    PruneRun,
    Trainer,
    TrainError,
    build_model,
    evaluate_checkpoint,
    evaluate_model,
    evaluate_scores,
    fit,
    load_trained,
    resolve_config,
    resume_config,
)
from .presets import PRESETS, Preset, list_presets, preset_values
from .rundir import RunDir, RunDirError
from .schedule import lr_at
from .shipping import export_run
from .state import TrainState

__all__ = [
    "PRESETS",
    "RESUME_SAFE_FIELDS",
    "SCHEDULES",
    "Callback",
    "CheckpointError",
    "DivergedError",
    "Preset",
    "PruneRun",
    "PrunedError",
    "RunDir",
    "RunDirError",
    "TrainConfig",
    "TrainError",
    "TrainState",
    "Trainer",
    "apply_overrides",
    "build_model",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_scores",
    "export_run",
    "fit",
    "list_presets",
    "load_checkpoint",
    "load_config_file",
    "load_trained",
    "lr_at",
    "preset_values",
    "resolve_config",
    "resume_config",
    "save_checkpoint",
]
