"""A study's runs on other executors: Ray (a local Ray of 2 CPUs) and submitit (local jobs) give the local
executor's numbers run for run, and results from several executors combine in one table; a driver killed with
SIGKILL under Ray leaves a study whose rerun trains only what had not finished; one driver per study
directory; the missing extra and scripts/device_check.sh's CPU-side behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from factorconv.cli import main
from factorconv.study import LocalExecutor, StudyError, StudySpec, create_executor, run_study
from factorconv.study.lock import StudyLock

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"progress": "off", "steps": 12, "train_subset": 256, "test_subset": 128, "batch_size": 32}


def spec(seeds: int = 2, **overrides) -> StudySpec:
    return StudySpec(model="resnet20", convs=["conv", "dsep", "bdsc"], budget="params=12k", data="synthetic",
                     preset="smoke", seeds=seeds, overrides={**SMOKE, **overrides})


def _per_run(results: dict) -> dict[tuple[str, int], tuple[float, float]]:
    return {(r["conv"], run["seed"]): (run["acc"], run["run_dir"]) for r in results["rows"] for run in r["runs"]}


def _trace(run_dir: str, base: Path) -> list[float]:
    path = Path(run_dir) if Path(run_dir).is_absolute() else base / run_dir
    return json.loads((path / "result.json").read_text())["loss_trace"]


def test_every_executor_gives_the_same_runs_and_one_table(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("ray", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    pytest.importorskip("submitit", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    local = run_study(spec(), "local", executor=LocalExecutor(2), measure_latency=False)
    # one table from two executors: seed 0 locally, then the study grown to seed 1 on Ray
    run_study(spec(seeds=1), "mixed", executor=LocalExecutor(1), measure_latency=False)
    mixed = run_study(spec(), "mixed", executor=create_executor("ray", threads=1, workers=2, gpus=0),
                      measure_latency=False)
    jobs = run_study(spec(), "jobs", executor=create_executor("submitit", threads=1, out=Path("jobs"), gpus=0,
                                                              submitit_cluster="local"), measure_latency=False)
    want = {k: acc for k, (acc, _) in _per_run(local).items()}
    assert len(want) == 6
    for results, base in ((mixed, tmp_path), (jobs, tmp_path)):
        got = _per_run(results)
        assert {k: acc for k, (acc, _) in got.items()} == want
        for key, (_, run_dir) in got.items():
            assert _trace(run_dir, base) == _trace(_per_run(local)[key][1], tmp_path), key
    assert list(Path("jobs/submitit").iterdir())  # submitit kept its logs in the study directory


_DRIVER = textwrap.dedent("""
    import sys
    from factorconv.study import StudySpec, create_executor, run_study
    spec = StudySpec(model="resnet20", convs=["conv", "dsep", "bdsc"], budget="params=12k", data="synthetic",
                     preset="smoke", seeds=3, overrides={"progress": "off", "steps": 40, "train_subset": 256,
                                                         "test_subset": 128, "batch_size": 32})
    run_study(spec, sys.argv[1], executor=create_executor("ray", threads=1, workers=2, gpus=0),
              measure_latency=False)
""")


def _wait_until_the_session_is_gone(sid: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = subprocess.run(["ps", "-eo", "sid=,stat="], capture_output=True, text=True).stdout.split("\n")
        if not any(r.split()[0] == str(sid) and not r.split()[1].startswith("Z") for r in rows if r.strip()):
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of session {sid} still run {timeout} s after SIGKILL")


def test_a_driver_killed_under_ray_leaves_a_study_the_rerun_finishes(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    script, out = tmp_path / "driver.py", tmp_path / "study"
    script.write_text(_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, str(script), str(out)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while time.time() < deadline and len(list(out.glob("runs/*/*/seed*/result.json"))) < 2:
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    _wait_until_the_session_is_gone(driver.pid)  # a run in a system call when killed completes that call
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/seed*/result.json")}
    assert 2 <= len(finished) < 9
    done = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(finished)} of 9 runs finished before: skipped" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was trained again
    assert len(list(out.glob("runs/*/*/seed*/result.json"))) == 9


def test_a_second_driver_on_a_study_is_refused(tmp_path: Path, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from factorconv.study.lock import StudyLock
        with StudyLock(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyError, match=rf"being run by another driver \(pid {holder.pid} on "), \
                StudyLock(tmp_path):
            pass
        argv = ["compare", "--data", "synthetic", "--convs", "conv", "--budget", "none", "--out", str(tmp_path)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(tmp_path):  # the holder died: the lock went with it
        pass


def test_a_missing_extra_says_what_to_install(monkeypatch) -> None:
    import builtins

    from factorconv.study import cluster

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name in ("ray", "submitit"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    for name in ("ray", "submitit"):
        with pytest.raises(StudyError, match=r"pip install 'factorconv\[cluster\]'"):
            cluster.require(name, f"--executor {name}")


def test_device_check_explains_itself_and_refuses_without_a_gpu(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "device_check.sh"
    assert os.access(script, os.X_OK)
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "at most 8 minutes" in shown.stdout and "pytest -m cuda" in shown.stdout
    wrong = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown option '--fast'" in wrong.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot be shown here")
    env = {k: v for k, v in os.environ.items() if k != "FACTORCONV_TORCH_INDEX"}
    results = ROOT / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    refused = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 3 and "no CUDA device" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before  # a refusal changes nothing
