"""`factorconv tune`: a fair comparison tunes every operator with equal effort. Each operator's own options
(its declared `search_space`) and the recipe's learning rate and weight decay are searched with Optuna under the
budget, every trial re-matched to it and scored on a validation split held out of the training set; the best
configuration and the default of each operator are then confirmed on fresh seeds through `compare`'s machinery.
Needs the optional extra `tune` (Optuna). See docs/tune.md.
"""

from .report import build_tune_report
from .runner import run_tune
from .spec import DEFAULT_HOLDOUT, DEFAULT_TRIALS, PRUNERS, TuneSpec
from .storage import TuneError

__all__ = ["DEFAULT_HOLDOUT", "DEFAULT_TRIALS", "PRUNERS", "TuneError", "TuneSpec", "build_tune_report", "run_tune"]
