"""The second hostile probe (issue 31): each numbered defect as the case it was found by, then more members of
its class. Data loss (1-3), silently wrong answers (4-11), hangs (12-14), tracebacks instead of one line
(15-21), documented paths that failed (22-23); then TensorBoard logs and the study progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import factorconv as fc
from factorconv.cli import main
from factorconv.data import DatasetError
from factorconv.train import TrainError, fit, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {"data": "synthetic", "model": "resnet20", "width": 0.25, "progress": "off", "threads": 1,
         "train_subset": 128, "test_subset": 64, "steps": 4, "batch_size": 32}
STUDY = {"progress": "off", "steps": 4, "train_subset": 128, "test_subset": 64, "batch_size": 32}


def _fit(run: Path, **overrides) -> dict:
    torch.set_num_threads(1)
    return fit(resolve_config("smoke", overrides={**SMOKE, **overrides, "run_dir": str(run)}))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished smoke run (DO-Conv), read or exported by the tests; never modified by them."""
    path = tmp_path_factory.mktemp("probe2") / "run"
    _fit(path, conv="doconv")
    return path


def _one_line(capsys, status: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert status in (1, 2), (status, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _study(tmp: Path, out: str, **fields) -> fc.study.StudySpec:
    from factorconv.study import StudySpec

    values = {"model": "resnet20", "convs": ["conv"], "budget": "none", "width": 0.25, "data": "synthetic",
              "preset": "smoke", "seeds": 1, "overrides": dict(STUDY)} | fields
    return StudySpec(**values)


# 1 ------------------------------------------------------------------- no command overwrites what factorconv owns


def test_export_never_overwrites_a_runs_or_studys_own_files(run: Path, tmp_path: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for name in ("checkpoint.pt", "result.json", "config.json", "metrics.jsonl"):
        for force in ([], ["--force"]):
            status = main(["export", str(run), "--format", "state_dict", "--out", str(run / name), *force])
            _one_line(capsys, status, f"{run / name} is the run directory's own {name}", "not even with --force")
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text("{}")
    status = main(["export", str(run), "--format", "state_dict", "--out", str(study / "study.json"), "--force"])
    _one_line(capsys, status, "the study directory's own study.json")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing was touched
    assert main(["eval", str(run)]) == 0


def test_an_existing_output_needs_force_in_every_command(run: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "model.pt"
    target.write_text("mine")
    status = main(["export", str(run), "--format", "state_dict", "--out", str(target)])
    _one_line(capsys, status, f"{target} exists; pass --force to replace it")
    assert target.read_text() == "mine"
    assert main(["export", str(run), "--format", "state_dict", "--out", str(target), "--force"]) == 0
    assert target.stat().st_size > 1000
    capsys.readouterr()
    shown = tmp_path / "show"
    assert main(["show", str(run), "--what", "doconv", "--out", str(shown)]) == 0
    capsys.readouterr()
    status = main(["show", str(run), "--what", "doconv", "--out", str(shown)])
    _one_line(capsys, status, "exists; pass --force")
    assert main(["show", str(run), "--what", "doconv", "--out", str(shown), "--force"]) == 0
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_ops_cpu.json").write_text("recorded")
    status = main(["--threads", "1", "bench", "ops", "--convs", "conv", "--batch", "2", "--repeats", "2", "--out",
                   str(bench)])
    _one_line(capsys, status, "bench_ops_cpu.json exists; pass --force")
    assert (bench / "bench_ops_cpu.json").read_text() == "recorded"


# 2 ------------------------------------------------------------------- one trainer per run; nothing outlives its driver


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path: Path) -> None:
    from factorconv.train import RunDir

    path = tmp_path / "run"
    path.mkdir()
    with RunDir(path).lock(), pytest.raises(TrainError, match=r"is being trained by another process \(pid "):
        _fit(path)  # the lock's holder here is this process, through another open file: flock refuses it too
    assert not (path / "metrics.jsonl").exists() and not (path / "checkpoint.pt").exists()
    _fit(path)  # released: it trains
    assert (path / "result.json").exists()


_SUBMITIT_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from factorconv.study import RunTask, create_executor
    config = {"model": "resnet20", "width": 0.25, "data": "synthetic", "progress": "off", "threads": 1,
              "steps": 100000, "batch_size": 8, "log_every": 1, "run_dir": sys.argv[1]}
    from factorconv.train import resolve_config
    cfg = resolve_config("smoke", overrides=config).to_dict()
    executor = create_executor("submitit", threads=1, out=Path(sys.argv[2]), gpus=0, submitit_cluster="local")
    executor.run([RunTask(cfg, "long run")], lambda task, result: None)
""")


def test_submitit_jobs_end_with_their_killed_driver(tmp_path: Path) -> None:
    pytest.importorskip("submitit", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    from factorconv.locking import DirectoryLock, LockBusy

    script = tmp_path / "driver.py"
    script.write_text(_SUBMITIT_DRIVER)
    run = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, str(script), str(run), str(tmp_path / "jobs")], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():  # the job is training
            assert time.monotonic() < deadline and driver.poll() is None, "the job never started"
            time.sleep(0.2)
        with pytest.raises(LockBusy):  # the job holds its run
            DirectoryLock(run, ".run.lock").__enter__()
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    # the job watches its driver once a second and ends with it: the run's lock is free within seconds, so a
    # rerun can resume the run instead of training beside an orphan
    with DirectoryLock(run, ".run.lock", wait=15):
        pass
    steps = len((run / "metrics.jsonl").read_text().splitlines())
    time.sleep(1.5)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == steps  # nothing trains it any more


def test_the_reaper_stops_what_a_killed_driver_started(tmp_path: Path) -> None:
    """A local Ray started for a study leaves its agents behind when the driver is killed: the reaper (started
    beside the local Ray) stops every process using the session directory once the driver is gone."""
    from factorconv.locking import process_alive
    from factorconv.study.reaper import processes_using, start_reaper

    session = tmp_path / "session_2026-12-05_00-00-00_1"
    (session / "logs").mkdir(parents=True)
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    agent = subprocess.Popen([sys.executable, "-c", f"f = open({str(session / 'logs' / 'agent.out')!r}, 'a'); "
                              "import time; time.sleep(60)"], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while agent.pid not in processes_using(str(session)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert bystander.pid not in processes_using(str(session))
        reaper = start_reaper(driver.pid, str(session))
        time.sleep(1.5)
        assert process_alive(agent.pid)  # the driver lives: nothing is stopped
        driver.kill()
        driver.wait()
        assert reaper.wait(timeout=20) == 0
        agent.wait(timeout=5)
        assert not process_alive(agent.pid) and process_alive(bystander.pid)
    finally:
        for proc in (driver, agent, bystander):
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()


# 3 ------------------------------------------------------------------- a run that restarts from scratch, from scratch


def test_a_run_killed_before_its_first_checkpoint_restarts_its_logs(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def die(event: str, info: dict) -> None:
        if event == "step" and info["step"] == 3:
            raise RuntimeError("killed")

    cfg = resolve_config("smoke", overrides={**SMOKE, "log_every": 1, "run_dir": str(run)})
    with pytest.raises(RuntimeError, match="killed"):
        fit(cfg, callbacks=[die])
    assert not (run / "checkpoint.pt").exists() and len((run / "metrics.jsonl").read_text().splitlines()) == 3
    (run / "result.json").write_text('{"status": "diverged"}')  # any leftover of the attempt goes too
    fit(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4]  # not 1, 2, 3, 1, 2, 3, 4
    assert json.loads((run / "result.json").read_text())["status"] == "done"


# 4 ------------------------------------------------------------------- which data a run saw is part of its identity


def _folder(root: Path, seed: int, bits: int = 8) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", 24), ("test", 8)):
        for c in range(2):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                top = 65535 if bits == 16 else 255
                pixels = (rng.random((12, 12)) * top * (0.4 + 0.6 * c)).astype(np.uint16 if bits == 16 else np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def test_a_study_refuses_runs_on_other_data(tmp_path: Path) -> None:
    from factorconv.study import StudyError, run_study

    fa, fb = _folder(tmp_path / "fa", 0), _folder(tmp_path / "fb", 1)
    out = tmp_path / "study"
    first = run_study(_study(tmp_path, "s", data="folder", data_dir=str(fa)), out, measure_latency=False)
    with pytest.raises(StudyError, match=r"other settings \(data: folder with fingerprint \w+ here, folder with "
                                         r"fingerprint \w+ there; its data came from .*fa"):
        run_study(_study(tmp_path, "s", data="folder", data_dir=str(fb), seeds=2), out, measure_latency=False)
    # the same data elsewhere is the same data: a copy of fa finishes the study
    import shutil

    shutil.copytree(fa, tmp_path / "fa-copy")
    grown = run_study(_study(tmp_path, "s", data="folder", data_dir=str(tmp_path / "fa-copy"), seeds=2), out,
                      measure_latency=False)
    assert grown["rows"][0]["runs"][0]["acc"] == first["rows"][0]["runs"][0]["acc"]
    # a finished run that saw other data is never averaged in, even where study.json says nothing of data
    result = next(out.glob("runs/conv/*/seed1/result.json"))
    saved = json.loads(result.read_text())
    result.write_text(json.dumps({**saved, "data_fingerprint": "0" * 24}))
    with pytest.raises(StudyError, match="trained on other data"):
        run_study(_study(tmp_path, "s", data="folder", data_dir=str(fa), seeds=2), out, measure_latency=False)


def test_resuming_on_changed_data_is_refused(tmp_path: Path) -> None:
    fa = _folder(tmp_path / "fa", 0)
    run = tmp_path / "run"
    cfg = resolve_config("smoke", overrides={**SMOKE, "data": "folder", "data_dir": str(fa), "steps": 8,
                                             "checkpoint_every": 2, "run_dir": str(run)})

    def stop(event: str, info: dict) -> None:
        if event == "checkpoint" and info["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callbacks=[stop])
    _folder(tmp_path / "fa", 5)  # the files are replaced by other images
    with pytest.raises(DatasetError, match="not the data the checkpoint being resumed was trained on"):
        fit(cfg, resume=True)


# 5 ------------------------------------------------------------------- 16-bit images at their depth


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    from factorconv.data.folder import read_image_folder
    from factorconv.data.segmentation import read_segmentation_folder

    ramp = (np.arange(12 * 12, dtype=np.int64).reshape(12, 12) * 455).astype(np.uint16)  # 0 .. 65065
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(ramp).save(tmp_path / "f" / "a" / "0.png")
    assert Image.open(tmp_path / "f" / "a" / "0.png").mode.startswith("I")
    want = torch.from_numpy((ramp.astype(np.int64) * 255 + 32767) // 65535)
    for mode, channels in (("L", 1), ("RGB", 3)):
        got = read_image_folder(tmp_path / "f", mode=mode).images[0]
        assert got.shape[0] == channels and (got == want).all()
    assert (want == 255).float().mean() < 0.01  # the old reader saturated 99% of these pixels
    seg = tmp_path / "seg" / "train"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    Image.fromarray(ramp).save(seg / "images" / "0.png")
    Image.fromarray((np.arange(144).reshape(12, 12) % 3).astype(np.uint16)).save(seg / "masks" / "0.png")
    pair = read_segmentation_folder(seg)
    assert pair.images.shape[1] == 1 and (pair.images[0, 0] == want).all() and pair.labels.max() == 2
    Image.fromarray(np.full((12, 12), 300, dtype=np.uint16)).save(seg / "masks" / "0.png")
    with pytest.raises(DatasetError, match="a 16-bit mask holds values up to 300"):
        read_segmentation_folder(seg)
    Image.fromarray(np.zeros((12, 12), dtype=np.float32)).save(tmp_path / "f" / "a" / "1.tif")
    with pytest.raises(DatasetError, match=r"1\.tif: floating-point pixels \(mode F\) are not read"):
        read_image_folder(tmp_path / "f")


# 6 ------------------------------------------------------------------- width is a multiplier everywhere


# (model, its paper's C, a smaller width, the smallest width it builds at: the budget grid's 1/16, except where
# the operator's own groups need a multiple: IGCV2*'s branches of 8 divide its widths)
WIDTH_CASES = [("darts_cifar", 36, 0.5, 1 / 16), ("darts_imagenet", 48, 0.5, 1 / 16),
               ("xception_cifar", 35, 0.5, 1 / 16), ("igcv1_cifar", 48, 0.5, 1 / 16), ("igcv2_cifar", 64, 0.5, 1 / 16),
               ("igcv2star_cifar", 216, 1 / 3, 1 / 9), ("xception8", 64, 0.5, 1 / 16), ("igcv2_8", 144, 0.5, 1 / 16)]


@pytest.mark.parametrize(("name", "channels", "smaller", "smallest"), WIDTH_CASES)
def test_width_multiplies_the_papers_channels(name: str, channels: int, smaller: float, smallest: float) -> None:
    with torch.device("meta"):
        at_one = fc.create_model(name)
        named = fc.create_model(name, channels=channels)
        half = fc.create_model(name, width=smaller)
        half_named = fc.create_model(name, channels=round(channels * smaller))
        tiny = fc.create_model(name, width=smallest)
    assert fc.count_params(at_one) == fc.count_params(named)
    assert fc.count_params(half) == fc.count_params(half_named) < fc.count_params(at_one)
    assert fc.count_params(tiny) < fc.count_params(half)
    with pytest.raises(ValueError, match=r"at least 2 are needed"):
        fc.create_model(name, width=1 / 1000)


def test_darts_counts_and_budgets_as_the_paper(capsys) -> None:
    assert main(["profile", "darts_cifar", "--width", "1", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["deploy_params"] == 3_349_342  # DARTS's own count, the auxiliary head left out
    assert main(["profile", "darts_cifar", "--summary"]) == 0  # no --conv: the model's own operator, dsep
    shown = capsys.readouterr().out
    assert "conv=dsep" in shown and "deploy params  3,349,342" in shown and "18,046,128" not in shown
    from factorconv.study import StudySpec
    from factorconv.study.spec import match_widths

    spec = StudySpec(model="darts_cifar", convs=["dsep", "conv"], budget="params=1M", data="synthetic",
                     preset="smoke", model_kwargs={c: {"cells": 8} for c in ("dsep", "conv")})
    widths = match_widths(spec, (1, 16, 16), 10)
    assert all(0.3 < w < 1.5 for w, _ in widths.values()) and widths[("dsep", spec.budgets[0])][0] != \
        widths[("conv", spec.budgets[0])][0]


# 7, 8 ---------------------------------------------------- segmentation: pixels are not images; nothing scored


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "run"
    _fit(path, data="synthetic-seg", model="deeplabv3_resnet50", width=0.0625, train_subset=16, test_subset=4,
         steps=1, batch_size=4)
    return path


def test_export_check_on_segmentation_counts_pixels(seg_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(seg_run), "--check", "--check-images", "4", "--check-batch", "2", "--out",
                 str(tmp_path / "seg.onnx")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check on")]
    assert len(lines) == 2
    for line in lines:
        share = float(line.rsplit("top-1 agreement per pixel ", 1)[1].rstrip("%"))
        assert 99 <= share <= 100, line


def _seg_folder(root: Path, test_mask: int) -> Path:
    from PIL import Image

    for split, value in (("train", 1), ("test", test_mask)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(root / split / "masks" / f"{i}.png")
    return root


def test_a_test_split_with_nothing_scored_says_so(tmp_path: Path, capsys) -> None:
    data = _seg_folder(tmp_path / "seg", 255)
    status = main(["--threads", "1", "train", "--data", "seg-folder", "--data-dir", str(data), "--model",
                   "deeplabv3_resnet50", "--width", "0.125", "--preset", "smoke", "--set", "steps=1", "--set",
                   "batch_size=2", "--set", "progress=off", "--run-dir", str(tmp_path / "r")])
    _one_line(capsys, status, "every test mask pixel is 255 (ignore), so nothing in the test split would be scored")
    from factorconv.train.task import Scores

    scores = Scores(3, True, torch.device("cpu"))
    scores.add(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 255, dtype=torch.long))
    assert scores.result(scores.sums) == {"test_loss": None, "test_acc": None, "test_pixel_acc": None}


# 9, 16 --------------------------------------------------------------- report reads every field it trusts


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    from factorconv.study import run_study

    out = tmp_path_factory.mktemp("study") / "s"
    run_study(_study(out, "s", convs=["conv", "dsep"], seeds=2), out, measure_latency=False)
    return out


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda r: r.pop("test_acc"), "a finished run without 'test_acc'"),
    (lambda r: r.update(test_acc=95.0), "field 'test_acc' = 95.0 is not a fraction in [0, 1]"),
    (lambda r: r.update(test_acc=float("nan")), "field 'test_acc' = NaN is not a fraction in [0, 1]"),
    (lambda r: r.update(test_acc="0.9"), "field 'test_acc' = \"0.9\" is not a fraction"),
    (lambda r: r.update(loss_trace=[1.0, "x"]), "field 'loss_trace'"),
    (lambda r: r.update(profile={"params": -3}), "field 'profile.params' = -3 is not a count"),
    (lambda r: r.update(train_seconds=-1), "field 'train_seconds' = -1 is not a number of seconds"),
])
def test_report_names_the_file_and_field_that_was_edited(small_study: Path, tmp_path: Path, edit, needle,
                                                         capsys) -> None:
    import shutil

    out = tmp_path / "s"
    shutil.copytree(small_study, out)
    result = next(out.glob("runs/dsep/*/seed1/result.json"))
    record = json.loads(result.read_text())
    edit(record)
    result.write_text(json.dumps(record))
    status = main(["report", str(out)])
    _one_line(capsys, status, str(result), needle)


def test_report_on_damaged_study_files(small_study: Path, tmp_path: Path, capsys) -> None:
    import shutil

    out = tmp_path / "s"
    shutil.copytree(small_study, out)
    study = json.loads((out / "study.json").read_text())
    (out / "study.json").write_text(json.dumps({**study, "seeds": "three"}))
    _one_line(capsys, main(["report", str(out)]), "study.json does not describe a valid study")
    (out / "study.json").write_text(json.dumps({**study, "widths": {"none": {"conv": -1}}}))
    _one_line(capsys, main(["report", str(out)]), "field 'widths'")
    (out / "study.json").write_text('{"model": ')
    _one_line(capsys, main(["report", str(out)]), "study.json is not a readable study file")
    (out / "study.json").write_text(json.dumps(study))
    (out / "latency.json").write_text(json.dumps({"devices": {"cpu": {"conv": {"median_ms": "fast"}}}}))
    _one_line(capsys, main(["report", str(out)]), "latency.json: field 'devices.cpu.conv'")
    (out / "latency.json").unlink()
    assert main(["report", str(out)]) == 0


# 10, 11 -------------------------------------------------------------- reproduce says what it does


def test_reproduce_dry_run_uses_the_seeds_asked_for(capsys) -> None:
    assert main(["reproduce", "osep-t6", "--dry-run", "--scale", "paper", "--seeds", "1000"]) == 0
    shown = capsys.readouterr().out
    assert "3 seeds" not in shown and "1000 seeds; 3 rows x 1000 seeds = 3000 runs" in shown
    assert main(["reproduce", "osep-t6", "--dry-run", "--seeds", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == 21


def test_claims_of_diverged_rows_say_diverged() -> None:
    from factorconv.reproduce import claims, get_reproduction

    study = get_reproduction("osep-t6")
    runs = [{"seed": s, "acc": None, "status": "diverged"} for s in range(3)]
    ok = [{"seed": s, "acc": 80.0 + s, "status": "ok"} for s in range(3)]
    rows = [{"conv": r.label, "accuracy": None, "difference": None, "runs": runs, "diverged": 3}
            for r in study.rows]
    verdicts = [c["verdict"] for c in claims(study, {"rows": rows})[1:]]
    assert verdicts == ["diverged (3 of 3 runs)"] * 2
    rows[0] = {**rows[0], "runs": ok, "diverged": 0, "accuracy": {"mean": 81.0}}
    assert [c["verdict"] for c in claims(study, {"rows": rows})[1:]] == ["diverged (3 of 3 runs)"] * 2
    rows[1:] = [{**r, "runs": ok, "diverged": 0} for r in rows[1:]]
    rows[0] = {**rows[0], "runs": runs, "diverged": 3}
    assert [c["verdict"] for c in claims(study, {"rows": rows})[1:]] == ["diverged (the reference's 3 of 3 runs)"] * 2
    only_reference = [{**rows[0], "runs": ok, "diverged": 0}]
    assert [c["verdict"] for c in claims(study, {"rows": only_reference})[1:]] == ["not run"] * 2


# 12, 13, 14 ---------------------------------------------------------- nothing hangs


def test_an_unreachable_ray_cluster_is_one_line(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    t0 = time.monotonic()
    status = main(["--threads", "1", "compare", "--data", "synthetic", "--preset", "smoke", "--convs", "conv",
                   "--budget", "none", "--seeds", "1", "--no-latency", "--executor", "ray", "--ray-address",
                   "127.0.0.1:1", "--out", str(tmp_path / "s")])
    _one_line(capsys, status, "--ray-address 127.0.0.1:1: no Ray cluster reachable there within 10 s")
    assert time.monotonic() - t0 < 60


def test_plans_of_many_convs_are_found_without_exponential_search(capsys) -> None:
    from factorconv.ops.igcv import plan_igcv2

    plan = plan_igcv2(64, 9, L=100, channelwise=True)  # never ended before; L = 35 took 4 s
    assert len(plan.branch_sizes) == 100 and math.prod(plan.branch_sizes) == 64
    assert plan_igcv2(64, 9, L=3, channelwise=True).branch_sizes == (1, 8, 8)  # the small cases are unchanged
    assert plan_igcv2(512, 9, L=60).params > 0
    assert main(["plan", "osep", "64", "64", "--parts", "1000", "--json"]) == 0  # was an OverflowError
    planned = json.loads(capsys.readouterr().out)
    assert len(planned["parts"]) == 1000


@pytest.mark.parametrize("special", ["/dev/zero", "directory", "fifo", "large"])
def test_config_files_are_regular_and_bounded(special: str, tmp_path: Path, capsys) -> None:
    path = {"/dev/zero": Path("/dev/zero"), "directory": tmp_path, "fifo": tmp_path / "fifo",
            "large": tmp_path / "big.json"}[special]
    if special == "fifo":
        os.mkfifo(path)
    if special == "large":
        path.write_text(json.dumps({"lr": 0.1, "pad": "x" * (1 << 20)}))
    status = main(["train", "--config", str(path), "--print-config"])
    _one_line(capsys, status, "config file", "not a regular file" if special != "large" else "more than the "
                                                                                            "1,048,576")


# 15 ------------------------------------------------------------------ which settings differ


def test_a_study_of_other_settings_names_each_difference(tmp_path: Path, capsys) -> None:
    from factorconv.study import StudyError, run_study

    out = tmp_path / "s"
    run_study(_study(tmp_path, "s"), out, measure_latency=False)
    with pytest.raises(StudyError, match=r"other settings \(width: 0.5 here, 0.25 there\)"):
        run_study(_study(tmp_path, "s", width=0.5), out, measure_latency=False)
    with pytest.raises(StudyError, match=r"budget kind: \[\"params\"\] here, \[\] there.*width: \(not set\) here, "
                                         r"0.25 there"):
        run_study(_study(tmp_path, "s", budget="params=30k", width=1.0), out, measure_latency=False)
    capsys.readouterr()
    status = main(["--threads", "1", "reproduce", "osep-t6", "--out", str(out), "--set", "steps=1"])
    err = _one_line(capsys, status, "holds a study with other settings (")
    assert "KeyError" not in err and "()" not in err


# 17 ------------------------------------------------------------------ unwritable, occupied and full outputs


def test_unwritable_and_occupied_outputs_are_one_line(run: Path, small_study: Path, tmp_path: Path, capsys) -> None:
    status = main(["export", str(run), "--format", "state_dict", "--out", "/proc/model.pt"])
    _one_line(capsys, status, "cannot write /proc/model.pt")
    status = main(["export", str(run), "--format", "state_dict", "--out", str(tmp_path)])
    _one_line(capsys, status, "is a directory; --out names the file to write")
    import shutil

    out = tmp_path / "study"
    shutil.copytree(small_study, out)
    (out / "report.md").unlink()
    (out / "report.md").mkdir()  # occupied by a directory
    status = main(["report", str(out)])
    _one_line(capsys, status, "report.md")
    shown = tmp_path / "shown"
    shown.write_text("a file where a directory belongs")
    status = main(["show", str(run), "--what", "doconv", "--out", str(shown)])
    _one_line(capsys, status, str(shown))


def test_a_full_disk_is_said_in_words(run: Path, tmp_path: Path, capsys) -> None:
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True,
                             check=False)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        status = main(["export", str(run), "--format", "state_dict", "--out", str(full / "model.pt")])
        err = _one_line(capsys, status, f"cannot write {full / 'model.pt'}: no space left on device")
        assert "enforce fail" not in err and not list(full.iterdir())  # no partial file left
        from factorconv.train.checkpoint import CheckpointError, save_checkpoint

        with pytest.raises(CheckpointError, match="no space left on device"):
            save_checkpoint({"model": {"w": torch.zeros(1 << 16)}, "config": {}}, full / "checkpoint.pt")
    finally:
        subprocess.run(["umount", str(full)], check=False)


# 18, 22 -------------------------------------------------------------- show works for every operator and task


@pytest.mark.parametrize("conv", ["dsep", "ssep", "osep", "igcv1", "igcv2", "dw", "decoupled", "conv", "bdsc"])
def test_show_defaults_skip_what_does_not_apply_and_say_so(conv: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from factorconv.analysis import applicable_views, show_model, view_reasons

    model = fc.create_model("resnet20", conv=conv, width=0.25, in_chans=1)
    x, y = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    data = show_model(model, x, y, x.sigmoid(), tmp_path, cam_images=2)
    reasons = view_reasons(model)
    assert set(data) == {*applicable_views(model), "skipped"} and "cam" in data
    assert data["skipped"] == {v: why for v, why in reasons.items() if why is not None}
    assert ("redundancy" in data) == (conv == "conv")
    files = {p.name for p in tmp_path.glob("*.png")}
    assert "cam.png" in files and ("redundancy.png" in files) == (conv == "conv")


def test_show_on_ssep_and_segmentation_runs(seg_run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    ssep = tmp_path / "ssep"
    _fit(ssep, conv="ssep")
    assert main(["show", str(ssep)]) == 0
    out = capsys.readouterr().out
    assert "cam" in out and "skipped redundancy: the model has fewer than two dense k×k conv layers" in out
    assert main(["show", str(seg_run), "--out", str(tmp_path / "seg")]) == 0
    out = capsys.readouterr().out
    assert "redundancy" in out and "skipped cam: Grad-CAM of a class score needs a classifier" in out
    status = main(["show", str(seg_run), "--what", "cam", "--out", str(tmp_path / "seg2")])
    _one_line(capsys, status, "cam: Grad-CAM of a class score needs a classifier")


# 19, 23 -------------------------------------------------------------- documented export paths


@pytest.mark.export
def test_dynamo_onnx_keeps_the_batch_dynamic(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run), "--fold", "--dynamo", "--check", "--check-images", "64", "--check-batch", "64",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    assert "check on 64 synthetic test images" in capsys.readouterr().out


@pytest.mark.export
@pytest.mark.parametrize("conv", ["doconv", "acdc", "dsep"])
def test_torchscript_without_fold_traces_where_scripting_fails(conv: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / conv
    _fit(path, conv=conv)
    assert main(["export", str(path), "--format", "torchscript", "--check", "--check-images", "32"]) == 0
    assert (path / "model.ts.pt").stat().st_size > 1000
    assert "check on 32 synthetic test images" in capsys.readouterr().out


# 20 ------------------------------------------------------------------ submitit: what failed, where its log is


def test_submitit_without_slurm_and_a_failed_job(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("submitit", reason="the cluster extra (scripts/setup.sh --dev installs it)")
    from factorconv.study import RunTask, StudyError, create_executor

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    status = main(["compare", "--data", "synthetic", "--executor", "submitit", "--submitit-cluster", "slurm", "--out",
                   str(tmp_path / "s")])
    _one_line(capsys, status, "--submitit-cluster slurm: Slurm is not available here (no sbatch on PATH)")
    assert not (tmp_path / "s").exists()
    monkeypatch.undo()
    config = resolve_config("smoke", overrides={**SMOKE, "model": "no_such_model",
                                                "run_dir": str(tmp_path / "r")}).to_dict()
    executor = create_executor("submitit", threads=1, out=tmp_path, gpus=0, submitit_cluster="local")
    failed = []
    with pytest.raises(StudyError) as caught:
        executor.run([RunTask(config, "bad run")], lambda task, result: None, lambda task, err: failed.append(err))
    message = str(caught.value)
    assert "bad run failed (" in message and "no_such_model" in message and "its log: " in message
    assert message.split("its log: ")[1].split(";")[0].endswith(".err")
    assert "had written no checkpoint" in message and "keeps its last checkpoint" not in message
    assert len(failed) == 1


# what users expect ------------------------------------------------------------------------------------------------


def test_tensorboard_logs_read_back(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra (scripts/setup.sh installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = _fit(run, log="tensorboard", log_every=1, steps=6, eval_every=1)
    events = EventAccumulator(str(run))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "train/acc", "lr", "test/loss", "test/acc", "hparam/test_acc"):
        assert tag in scalars, scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("test/acc")] == [4, 6] and "epoch/train_loss" in scalars
    assert events.Scalars("hparam/test_acc")[-1].value == pytest.approx(result["test_acc"])
    assert "config" in events.Tags()["tensors"] or "config/text_summary" in events.Tags()["tensors"]
    from tensorboard.plugins.hparams import plugin_data_pb2

    plugin = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["lr"].number_value == pytest.approx(0.05) or \
        "lr" in session.session_start_info.hparams
    # a study passes it to every run, and it is not part of what the runs compute
    from factorconv.study import run_study

    out = tmp_path / "study"
    run_study(_study(tmp_path, "s", overrides={**STUDY, "log": "tensorboard"}), out, measure_latency=False)
    assert list(out.glob("runs/conv/*/seed0/events.out.tfevents.*"))
    run_study(_study(tmp_path, "s", seeds=2), out, measure_latency=False)  # the same study without it grows


def test_study_progress_shows_done_running_failed_and_eta() -> None:
    import io

    from factorconv.study import RunTask
    from factorconv.study.progress import StudyProgress

    def task(conv: str, seed: int) -> RunTask:
        return RunTask({"run_dir": f"/s/{conv}/{seed}"}, f"{conv} seed {seed}", f"{conv}@1")

    finished = [(task("conv", 0), {"status": "done", "seconds": 60.0})]
    pending = [task("dsep", 0), task("conv", 1), task("dsep", 1), task("conv", 2)]
    stream = io.StringIO()
    progress = StudyProgress(pending, finished, workers=2, stream=stream, mode="bar")
    assert progress.status() == "1/5 done, 2 running, 0 failed, ETA 2 min"  # 4 x 60 s over 2 workers
    progress.finished(pending[0], {"status": "done", "seconds": 180.0}, "dsep seed 0: 80%")
    # (60 + 180 + 60) / 2 = 150 s, but the remaining dsep run alone takes 180 s
    assert progress.status() == "2/5 done, 2 running, 0 failed, ETA 3 min"
    progress.failed_run(pending[1], "conv seed 1 failed")
    progress.finished(pending[2], {"status": "diverged", "seconds": 180.0}, "dsep seed 1: diverged")
    assert progress.status() == "3/5 done, 1 diverged, 1 running, 1 failed, ETA 60 s"
    progress.close()
    drawn = stream.getvalue()
    assert "dsep seed 0: 80%" in drawn and "conv seed 1 failed" in drawn and "3/5" in drawn
    plain = io.StringIO()
    lines = StudyProgress(pending, finished, workers=2, stream=plain)  # not a terminal: lines only
    lines.finished(pending[0], {"status": "done", "seconds": 1.0}, "dsep seed 0: 80%")
    assert plain.getvalue() == "dsep seed 0: 80%\n"
