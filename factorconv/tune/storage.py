"""Where a tuning study's trials live, and the Optuna pieces that read and write them.

The storage is a real database through Optuna's RDBStorage: by default SQLite in the study directory
(`tune.db`: resumable, shared by the worker processes of one machine), or any SQLAlchemy URL Optuna accepts
(`postgresql://user@host/db` for drivers and workers on many machines). SQLite writers wait for each other
(a 60 s busy timeout) instead of failing with "database is locked". Trials record heartbeats, so a trial
whose driver died on another machine is failed after the grace period and retried (Optuna's
RetryFailedTrialCallback); on this machine a dead driver's trials are recognised at once by its pid.

Optuna is the optional extra `tune` (`pip install 'factorconv[tune]'`); without it `require_optuna` says so.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from pathlib import Path
from typing import Any

from ..ops.space import Choice, Dimension, FloatRange, IntRange
from ..study.errors import StudyError

__all__ = ["HEARTBEAT_SECONDS", "TuneError", "create_pruner", "create_sampler", "distributions", "open_storage",
           "require_optuna", "storage_url"]

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 180
SQLITE_BUSY_SECONDS = 60


class TuneError(StudyError):
    """The tuning study cannot go on; the message says why and what to do."""


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise TuneError("factorconv tune needs Optuna: pip install 'factorconv[tune]' (or pip install optuna); "
                        "scripts/setup.sh installs it") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats are "experimental" in Optuna 5; we rely on them knowingly and say so in docs/tune.md
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Optuna records heartbeats itself only inside Study.optimize; our driver records them for its trials
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def storage_url(storage: str | None, out: Path) -> str:
    """The storage's URL: `storage` as given, or SQLite in the study directory."""
    return storage or f"sqlite:///{(out / 'tune.db').resolve()}"


def open_storage(url: str) -> Any:
    """Optuna's RDBStorage at `url`, reached now (a URL nothing answers at is one clear error)."""
    optuna = require_optuna()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as err:  # SQLAlchemy's OperationalError, a missing driver module, a malformed URL
            if type(err).__name__ in _CREATION_RACES and attempt < 3:
                # two drivers creating a new database's tables at once: the other one won; its tables are there
                time.sleep(0.5 + random.random())
                continue
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise TuneError(f"--storage {_shown(url)}: cannot open the study storage ({type(err).__name__}: "
                            f"{first}); check the URL and that the database server runs (docs/tune.md)") from None
    raise AssertionError("unreachable")


# what a driver meets when another creates the same new database's tables at the same moment
_CREATION_RACES = ("IntegrityError", "ProgrammingError")


def _shown(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return scheme + sep + rest


def create_sampler(operator: str, seed: int, trials: int) -> Any:
    """TPE, seeded per operator (`seed` and the operator's name): the first third of the trials (at least 2,
    at most 10) are drawn at random, the rest by TPE."""
    optuna = require_optuna()
    own = int.from_bytes(hashlib.blake2b(operator.encode(), digest_size=4).digest(), "big")
    return optuna.samplers.TPESampler(seed=(seed + own) % 2**31, n_startup_trials=min(10, max(2, trials // 3)))


def create_pruner(name: str, trials: int) -> Any:
    """The pruner `name` (median, halving or none) for studies of `trials` trials: the median pruner stops a trial
    whose validation accuracy at a report point is below the median of the trials before it there (after the
    first third have finished); successive halving keeps the best third at each rung."""
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 3), n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def distributions(space: dict[str, Dimension]) -> dict[str, Any]:
    """Optuna distributions of a search space's dimensions."""
    optuna = require_optuna()
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, IntRange):
            out[name] = optuna.distributions.IntDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, FloatRange):
            out[name] = optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Choice):
            out[name] = optuna.distributions.CategoricalDistribution(list(dim.options))
        else:
            raise TypeError(f"{name}: not a search dimension: {dim!r}")
    return out
