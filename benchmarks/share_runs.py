"""Copy finished runs that a named study needs from other study directories into its own, so that a run two
studies share (ResNet-20 with the standard conv is the reference of acdc-t1, doconv-t1 and doconv-t7) trains
once. A run is copied only when its saved config computes exactly what the target study would train (every
field but bookkeeping, the same data fingerprint, and the same kernel settings as this process: MKL_CBWR and
ATEN_CPU_CAPABILITY, recorded in each result's environment); the study then reuses it as it reuses any finished
run, after checking that again.

    .venv/bin/python benchmarks/share_runs.py doconv-t7 runs/reproduce-doconv-t7-cpu runs/reproduce-*-cpu
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from factorconv.reproduce import get_reproduction
from factorconv.reproduce.runner import study_spec
from factorconv.study.execution import _computing
from factorconv.study.runner import data_info, plan_runs
from factorconv.study.spec import match_widths
from factorconv.train.rundir import kernel_settings


def _key(config: dict) -> str:
    return json.dumps(_computing(config), sort_keys=True, default=str)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("out")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args()
    spec = study_spec(get_reproduction(args.study), "cpu", seeds=args.seeds)
    data = data_info(spec)
    tasks = plan_runs(spec, Path(args.out), match_widths(spec, data.input_size, data.num_classes), quiet=True,
                      data_fingerprint=data.fingerprint)
    finished: dict[str, Path] = {}
    for source in args.sources:
        for result in Path(source).glob("runs/*/*/seed*/result.json"):
            done = json.loads(result.read_text())
            # a run computed under other kernels (MKL_CBWR, ATEN_CPU_CAPABILITY) is not shared: a replication
            # under them must train its own
            kernels = (done.get("environment") or {}).get("kernels", {})
            if (done.get("status") == "done" and done.get("data_fingerprint") == data.fingerprint
                    and kernels == kernel_settings()):
                finished.setdefault(_key(done["config"]), result.parent)
    copied = 0
    for task in tasks:
        target = Path(task.config["run_dir"])
        if (target / "result.json").exists():
            continue
        source = finished.get(_key(task.config))
        if source is not None and source.resolve() != target.resolve():
            shutil.rmtree(target, ignore_errors=True)  # an interrupted attempt: the finished copy replaces it
            shutil.copytree(source, target)
            copied += 1
            print(f"{task.label}: from {source}")
    print(f"{copied} of {len(tasks)} runs copied")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
