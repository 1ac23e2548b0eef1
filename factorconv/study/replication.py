"""Replication: one study's paired differences against another record of the same comparisons, claim by claim.

A record is a `factorconv reproduce` result (`reproduce.json`, or its copy under benchmarks/results/) or a
`factorconv compare` study's `results.json`. For every comparison both hold, the two verdicts are compared
(did it replicate?) and the two differences are tested against each other with an unpaired Welch test (the two
studies share no seeds' randomness: another machine, or another summation order); the Welch p-values are
adjusted family-wise over the comparisons (Holm), so that "the two runs differ" is not one of many chances.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import StudyError
from .power import ALPHA
from .records import read_json_record
from .stats import Summary, estimate_text, welch_test

__all__ = ["DISTINGUISHABLE", "compare_records", "read_comparisons", "render_replication"]

# verdicts that claim a difference (compare's and reproduce's words): the ones a replication must repeat
DISTINGUISHABLE = ("better", "worse", "same direction, distinguishable", "opposite",
                   "a difference the paper does not show")


def _summary(value: Any, path: Path, where: str) -> dict[str, float] | None:
    if value is None:
        return None
    ok = (isinstance(value, dict) and all(isinstance(value.get(k), int | float) and not isinstance(value.get(k), bool)
                                          for k in ("n", "mean"))
          and (value.get("std") is None or isinstance(value.get("std"), int | float)))
    if not ok or not math.isfinite(value["mean"]) or value["n"] < 1:
        raise StudyError(f"{path}: {where} is not a paired-difference summary (n, mean, std); the record was "
                         "changed after it was written, or is not one factorconv wrote")
    return value


def read_comparisons(path: str | Path) -> dict[str, Any]:
    """The comparisons a record holds: {"kind": "reproduce"|"compare", "study": name or title, "seeds": n,
    "comparisons": {key: {"name", "difference", "verdict"}}}; StudyError with one line for a missing,
    unreadable or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = next((path / f for f in ("reproduce.json", "results.json") if (path / f).exists()),
                    path / "results.json")
    record = read_json_record(path, "study record")
    if record is None:
        raise StudyError(f"{path}: no such record; give a reproduce.json (or benchmarks/results/reproduce_*.json) "
                         "or a compare study's results.json")
    comparisons: dict[str, dict[str, Any]] = {}
    if isinstance(record.get("claims"), list):
        kind, study = "reproduce", record.get("study")
        for i, claim in enumerate(record["claims"]):
            if not isinstance(claim, dict) or not isinstance(claim.get("label"), str):
                raise StudyError(f"{path}: claims[{i}] has no label; not a record factorconv wrote")
            if "verdict" in claim:  # the reference row has none
                comparisons[claim["label"]] = {
                    "name": str(claim.get("name", claim["label"])), "verdict": str(claim["verdict"]),
                    "difference": _summary(claim.get("difference"), path, f"claims[{i}].difference")}
    elif isinstance(record.get("rows"), list) and isinstance(record.get("spec"), dict):
        spec = record["spec"]
        kind, study = "compare", f"{spec.get('model')} on {spec.get('data')}, preset {spec.get('preset')}"
        for i, row in enumerate(record["rows"]):
            if not isinstance(row, dict) or not isinstance(row.get("conv"), str):
                raise StudyError(f"{path}: rows[{i}] has no conv; not a record factorconv wrote")
            if row["conv"] == row.get("reference") or row.get("verdict") is None:
                continue
            key = row["conv"] + (f" @ {row['budget']}" if row.get("budget") else "")
            comparisons[key] = {"name": key, "verdict": str(row["verdict"]),
                                "difference": _summary(row.get("difference"), path, f"rows[{i}].difference")}
    else:
        raise StudyError(f"{path}: neither a reproduce record (claims) nor a compare study's results.json (spec, "
                         "rows)")
    seeds = record.get("seeds", (record.get("spec") or {}).get("seeds"))
    return {"kind": kind, "study": study, "seeds": seeds, "path": str(path), "comparisons": comparisons,
            "setting": record.get("setting") or record.get("machine")}


def _welch(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float] | None:
    """a - b between two studies' mean paired differences: Welch's interval and two-sided p-value (None without
    two seeds on each side; two constant differences are equal or not, with nothing to estimate)."""
    if a["n"] < 2 or b["n"] < 2 or a.get("std") is None or b.get("std") is None:
        return None
    diff = a["mean"] - b["mean"]
    if a["std"] == b["std"] == 0:
        return {"mean": diff, "ci_low": diff, "ci_high": diff, "p": 1.0 if diff == 0 else 0.0, "df": math.inf}
    welch = welch_test(*(Summary(x["n"], x["mean"], x["std"], None, None) for x in (a, b)), confidence=1 - ALPHA)
    return {"mean": welch.difference, "ci_low": welch.low, "ci_high": welch.high, "p": welch.p, "df": welch.df}


def _holm(p_values: list[float]) -> list[float]:
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_records(recorded: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Claim by claim: recorded and new difference, whether the verdict is the same, and the Welch test of
    new − recorded, Holm-adjusted over the comparisons both records hold."""
    if recorded["kind"] != new["kind"] or recorded["study"] != new["study"]:
        raise StudyError(f"{recorded['path']} records {recorded['kind']} study {recorded['study']!r}, not "
                         f"{new['kind']} study {new['study']!r}: compare a record with a run of the same study")
    keys = [k for k in new["comparisons"] if k in recorded["comparisons"]]
    if not keys:
        raise StudyError(f"{recorded['path']} and {new['path']} share no comparison to replicate")
    rows = []
    for key in keys:
        old, now = recorded["comparisons"][key], new["comparisons"][key]
        welch = (_welch(now["difference"], old["difference"])
                 if now["difference"] and old["difference"] else None)
        rows.append({"key": key, "name": now["name"], "recorded": old["difference"], "new": now["difference"],
                     "recorded_verdict": old["verdict"], "new_verdict": now["verdict"],
                     "same_verdict": old["verdict"] == now["verdict"], "welch": welch})
    tested = [r for r in rows if r["welch"] is not None]
    for row, adjusted in zip(tested, _holm([r["welch"]["p"] for r in tested]), strict=True):
        row["welch"]["p_holm"] = adjusted
        row["differ"] = adjusted < ALPHA
    distinguishable = [r for r in rows if r["recorded_verdict"] in DISTINGUISHABLE]
    return {"study": new["study"], "kind": new["kind"], "recorded": recorded["path"], "new": new["path"],
            "recorded_setting": recorded.get("setting"), "rows": rows,
            "distinguishable": len(distinguishable),
            "replicated": sum(r["same_verdict"] for r in distinguishable),
            "verdicts_changed": sum(not r["same_verdict"] for r in rows),
            "differ": sum(bool(r.get("differ")) for r in rows)}


def _ci(d: dict[str, Any] | None) -> str:
    return estimate_text(d, signed=True)


def render_replication(result: dict[str, Any]) -> str:
    """The comparison as a markdown table with a summary line."""
    lines = [f"Replication of {result['study']} against {result['recorded']}", "",
             "| comparison | recorded Δ (95% CI) | recorded verdict | new Δ (95% CI) | new verdict | same verdict | "
             "new − recorded, Welch 95% CI | Holm p |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        w = r["welch"]
        lines.append(f"| {r['name']} | {_ci(r['recorded'])} | {r['recorded_verdict']} | {_ci(r['new'])} | "
                     f"{r['new_verdict']} | {'yes' if r['same_verdict'] else 'NO'} | "
                     f"{'-' if w is None else _ci(w)} | "
                     f"{'-' if w is None else format(w['p_holm'], '.3f') + (' (differ)' if r['differ'] else '')} |")
    lines += ["", f"{result['replicated']} of {result['distinguishable']} distinguishable verdict(s) replicated; "
              f"{result['verdicts_changed']} verdict(s) changed of {len(result['rows'])}; the two runs' differences "
              f"differ (Welch, Holm-adjusted p < {ALPHA:g}) for {result['differ']}."]
    return "\n".join(lines) + "\n"
