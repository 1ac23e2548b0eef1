"""Reading a study's files back (study.json, each run's result.json, latency.json), every field checked: a file
that was hand-edited, truncated or written by something else is a `StudyError` naming the file and the field
and what it should hold, never a silently dropped run or a mean of a percent taken for a fraction.

What a finished run must hold depends on its status: a "done" run its score as a fraction in [0, 1] (or null
for the last-five metric when it had fewer evaluations), a "diverged" run nothing more. Runs that have not
finished (no result.json, or another status) are not read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..checks import is_number
from ..inputs import MAX_RECORD_BYTES, read_user_text
from .errors import StudyError

__all__ = ["read_json_record", "read_latency", "read_run_result", "read_study"]

FINISHED = ("done", "diverged")
PROFILE_FIELDS = ("params", "param_bits", "buffers", "macs", "deploy_params", "deploy_macs", "size_bytes")


def read_json_record(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in `path`, None when there is no such file; StudyError for a file that is not a JSON
    object (damaged, truncated, or not regular)."""
    if not path.exists():
        return None
    try:
        value = json.loads(read_user_text(path, what, MAX_RECORD_BYTES))
    except ValueError as err:  # also json.JSONDecodeError
        raise StudyError(f"{path} is not a readable {what} ({_first(err)}); restore it, or delete it to redo "
                         "what wrote it") from None
    if not isinstance(value, dict):
        raise StudyError(f"{path}: a {what} holds a JSON object, not {type(value).__name__}")
    return value


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _bad(path: Path, field: str, value: Any, expected: str) -> StudyError:
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return StudyError(f"{path}: field {field!r} = {shown} is not {expected}; the file was changed after it was "
                      "written (restore it, or delete the run directory to retrain it)")


def _number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def read_run_result(path: Path, metric_field: str, finished: tuple[str, ...] = FINISHED) -> dict[str, Any] | None:
    """A run's result.json when the run finished (a status in `finished`: done or diverged; a tuning trial may
    also end pruned), its fields checked; None when it has not finished."""
    r = read_json_record(path, "run result")
    if r is None or r.get("status") not in finished:
        return None
    if r["status"] == "done":
        value = r.get(metric_field)
        if metric_field not in r or (value is None and metric_field in ("test_acc", "val_acc")):
            raise StudyError(f"{path}: a finished run without {metric_field!r} (its score); the file was changed "
                             "after it was written (restore it, or delete the run directory to retrain it)")
        if value is not None and not (_number(value) and 0 <= value <= 1):
            raise _bad(path, metric_field, value, "a fraction in [0, 1] (scores are stored as fractions: 0.9 for "
                                                  "90%)")
        trace = r.get("loss_trace")
        if trace is not None and (not isinstance(trace, list) or not all(_number(v) for v in trace)):
            raise _bad(path, "loss_trace", trace, "a list of finite numbers")
    for key in ("train_seconds", "seconds"):
        if r.get(key) is not None and not (_number(r[key]) and r[key] >= 0):
            raise _bad(path, key, r[key], "a number of seconds >= 0")
    health = r.get("health")
    if health is not None and not isinstance(health, dict):
        raise _bad(path, "health", health, "a mapping")
    profile = r.get("profile")
    if profile is not None:
        if not isinstance(profile, dict):
            raise _bad(path, "profile", profile, "a mapping of counts")
        for key in PROFILE_FIELDS:
            if key in profile and not (isinstance(profile[key], int) and not isinstance(profile[key], bool)
                                       and profile[key] >= 0):
                raise _bad(path, f"profile.{key}", profile[key], "a count (an integer >= 0)")
    for key in ("score", "run_dir", "data_fingerprint"):
        if r.get(key) is not None and not isinstance(r[key], str):
            raise _bad(path, key, r[key], "a string")
    return r


def read_study(out: Path) -> tuple[Any, dict[str, dict[str, float]], dict[str, Any]]:
    """(StudySpec, widths by budget, the raw study.json) of the study in `out`, checked."""
    from .spec import StudySpec

    path = out / "study.json"
    saved = read_json_record(path, "study file")
    if saved is None:
        raise StudyError(f"{out} holds no study (no study.json); run `factorconv compare --out {out}`")
    try:
        spec = StudySpec.from_dict(saved).validate()
    except (TypeError, ValueError) as err:
        raise StudyError(f"{path} does not describe a valid study ({_first(err)})") from None
    widths = saved.get("widths", {})
    if not isinstance(widths, dict) or not all(
            isinstance(chosen, dict) and all(isinstance(c, str) and _number(w) and w > 0 for c, w in chosen.items())
            for chosen in widths.values()):
        raise _bad(path, "widths", widths, "a mapping {budget: {operator: width > 0}}")
    return spec, widths, saved


def read_latency(out: Path) -> dict[str, Any]:
    """latency.json of a study ({} when it has none), its timings checked."""
    path = out / "latency.json"
    latency = read_json_record(path, "latency record") or {}
    devices = latency.get("devices", {})
    if not isinstance(devices, dict):
        raise _bad(path, "devices", devices, "a mapping {device: {label: timing}}")
    for device, timings in devices.items():
        if not isinstance(timings, dict):
            raise _bad(path, f"devices.{device}", timings, "a mapping {label: timing}")
        for label, timing in timings.items():
            if not isinstance(timing, dict) or not all(
                    _number(timing.get(k)) and timing[k] > 0 for k in ("median_ms", "ratio")):
                raise _bad(path, f"devices.{device}.{label}", timing, "a timing with positive median_ms and ratio")
    points = latency.get("points", {})
    batches = latency.get("batches", [])
    if not isinstance(points, dict) or not isinstance(batches, list) or (points and not batches):
        raise _bad(path, "points", points, "a mapping {label: {batch: timing}} with its batches")
    for label, by_batch in points.items():
        if not isinstance(by_batch, dict) or str(batches[0]) not in by_batch or not all(
                isinstance(t, dict) and _number(t.get("median_ms")) and t["median_ms"] > 0 and _number(t.get("ratio"))
                for t in by_batch.values()):
            raise _bad(path, f"points.{label}", by_batch, "a timing with positive median_ms and a ratio per batch")
    return latency
