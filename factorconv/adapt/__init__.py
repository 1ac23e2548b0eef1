"""Adapting a trained network to new tasks: few-shot episodes and MAML (ACDC's section 4.2). Fine-tuning a
part of a trained model on held-out classes is a training option (`train_only`, `init_from`, `classes`:
factorconv.train.transfer)."""

from .episodes import Episode, EpisodeSampler, class_pool
from .fewshot import compare_episodes, run_fewshot
from .maml import MAMLConfig, adapt, meta_test, meta_train

__all__ = ["Episode", "EpisodeSampler", "MAMLConfig", "adapt", "class_pool", "compare_episodes", "meta_test",
           "meta_train", "run_fewshot"]
