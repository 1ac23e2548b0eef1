"""`run_tune`: a tuning study from start to report, resumable. Everything is checked before anything is written
(the spec, Optuna, a storage given by URL, the data); then, holding the study directory's lock, the search runs
every operator's trials, the confirmation retrains the winners and the defaults on fresh seeds, and the report
is built. Rerunning the same command goes on from what the storage and the run directories hold.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..study.executors import create_executor
from ..study.lock import StudyLock
from ..study.records import read_json_record
from ..study.runner import data_info, run_study
from ..study.spec import StudySpec
from ..train.rundir import write_json
from .confirm import best_trial, confirmation_spec
from .pool import create_pool
from .report import build_tune_report
from .search import Search
from .spec import TuneSpec
from .storage import TuneError, open_storage, require_optuna, storage_url

__all__ = ["run_tune"]


def _check_saved(spec: TuneSpec, saved: dict[str, Any] | None, out: Path) -> None:
    if saved is None:
        return
    before = TuneSpec.from_dict(saved["spec"])
    mine, theirs = spec.identity(), before.identity()
    changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if set(before.convs) - set(spec.convs):
        changed.append("convs (operators left out)")
    if changed:
        raise TuneError(f"{out} holds a tuning study with other settings ({', '.join(changed)}); use another --out, "
                        "or the same settings to go on (more --trials, --seeds or --convs add to it)")


def run_tune(spec: TuneSpec, out: str | Path, *, executor: str = "local", workers: int | None = None,
             ray_address: str | None = None) -> dict[str, Any]:
    """Run (or finish) the tuning study in `out`; returns the report's results (also results.json)."""
    import os

    spec.validate()
    require_optuna()
    out = Path(out)
    workers = workers or max(1, (os.cpu_count() or 1) // spec.threads)
    if spec.storage:
        open_storage(spec.storage)  # an unreachable server: one line now, before anything is written
    saved = read_json_record(out / "tune.json", "tuning study file")
    _check_saved(spec, saved, out)
    study_like = StudySpec(model=spec.model, convs=spec.convs, data=spec.data, data_dir=spec.data_dir,
                           preset=spec.preset, overrides=dict(spec.overrides))
    data = data_info(study_like)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TuneError(f"cannot use {out} as the study directory: {err.strerror or err}") from None
    with StudyLock(out):
        timing = dict((saved or {}).get("timing", {}))
        write_json(out / "tune.json", {"spec": asdict(spec), "data_fingerprint": data.fingerprint,
                                       "data_source": data.source, "timing": timing})
        url = storage_url(spec.storage, out)
        pool = create_pool(executor, workers, spec.threads, ray_address)
        t0 = time.perf_counter()
        try:
            search = Search(spec, out, url, pool, data)
            search.run()
        finally:
            pool.close()
        timing["search_seconds"] = timing.get("search_seconds", 0) + time.perf_counter() - t0
        bests = {op: best_trial(study) for op, study in search.studies.items()}
        cspec = confirmation_spec(spec, search.spaces, bests)
        t1 = time.perf_counter()
        run_study(cspec, out / "confirm", executor=create_executor(executor, workers=workers, threads=spec.threads,
                                                                   out=out, ray_address=ray_address),
                  measure_latency=False)
        timing["confirm_seconds"] = timing.get("confirm_seconds", 0) + time.perf_counter() - t1
        write_json(out / "tune.json", {"spec": asdict(spec), "data_fingerprint": data.fingerprint,
                                       "data_source": data.source, "timing": timing})
        return build_tune_report(out)
