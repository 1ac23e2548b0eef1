"""factorconv tune: search spaces declared by the operators, --space, bad input, and a real tuning study at a
smoke scale: SIGKILL of the driver mid-search and the same command again (no finished trial retrained, none
counted twice), two workers on the default SQLite storage, the report and its rebuild, and a PostgreSQL storage
on a server the test starts and stops itself where Debian's postgresql is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT

import factorconv as fc
from factorconv.cli import main
from factorconv.ops.space import Choice, FloatRange, IntRange
from factorconv.registry import conv_entry, register_conv, unregister_conv
from factorconv.tune import TuneSpec
from factorconv.tune.spec import declared_space

optuna = pytest.importorskip("optuna", reason="factorconv tune needs the tune extra (optuna)")

SMOKE = ["--data", "synthetic", "--preset", "smoke", "--set", "steps=12", "--set", "train_subset=256",
         "--set", "test_subset=128", "--holdout", "64", "--budget", "params=12k", "--seeds", "2"]


# -------------------------------------------------------------------------------------------- search spaces

@pytest.mark.parametrize("conv", fc.list_convs())
def test_every_registered_operator_declares_its_search_space(conv: str) -> None:
    space = declared_space(conv)  # raises naming the operator when its class declares none
    builder = conv_entry(conv).builder
    params = __import__("inspect").signature(builder).parameters
    for name, dim in space.items():
        assert name in params, f"{conv}: search_space names {name!r}, which is not an option of the operator"
        assert isinstance(dim, IntRange | FloatRange | Choice)


def test_an_operator_without_a_search_space_is_named() -> None:
    base = conv_entry("conv").builder

    @register_conv("unsearched")
    class Unsearched(base):  # inherits conv's space, but declares none of its own
        pass

    try:
        with pytest.raises(ValueError, match=r"operator 'unsearched' declares no search space: give its class "
                                             r"`search_space"):
            TuneSpec(convs=["conv", "unsearched"]).validate()
    finally:
        unregister_conv("unsearched")


def test_space_items_restrict_fix_or_are_refused_with_what_is_allowed() -> None:
    spaces = TuneSpec(convs=["conv", "igcv2", "acdc"], space=[
        "lr=0.05", "igcv2:L=3", "acdc:atoms=4..12", "acdc:share=net|stage", "igcv2:K=none|4"]).spaces()
    assert spaces["conv"].fixed == {"lr": 0.05} and set(spaces["conv"].searched) == {"weight_decay"}
    assert spaces["igcv2"].fixed == {"L": 3, "lr": 0.05} and spaces["igcv2"].searched["K"] == Choice(None, 4)
    assert spaces["acdc"].searched["atoms"] == IntRange(4, 12)
    assert spaces["acdc"].searched["share"] == Choice("net", "stage")
    options, recipe = spaces["igcv2"].split({"K": None, "weight_decay": 1e-4})
    assert options == {"L": 3} and recipe == {"lr": 0.05, "weight_decay": 1e-4}  # K None: the operator's own
    bad = {
        "igcv2:Q=3": "igcv2 has no searchable option 'Q'; its space: L, K, lr, weight_decay",
        "L=3": "'L' is not a recipe field .*write igcv2:L=",
        "osep:gamma=2": "'osep' is not in --convs",
        "acdc:atoms=40": "acdc:atoms: 40 is not in 2..16",
        "acdc:share=tree": "tree not in net|stage|layer",
        "lr": "expected NAME=VALUE",
        "lr=1..2": "not a range within 0.01..0.3",
    }
    for item, message in bad.items():
        with pytest.raises(ValueError, match=message):
            TuneSpec(convs=["conv", "igcv2", "acdc"], space=[item]).spaces()
    with pytest.raises(ValueError, match="nothing to search for conv: --space fixes every dimension"):
        TuneSpec(convs=["conv"], space=["lr=0.1", "weight_decay=1e-4"]).validate()


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize(("argv", "message"), [
    (["--convs", "conv,nope"], "unknown conv 'nope'"),
    (["--trials", "0"], "argument --trials: expected an integer >= 1, got 0"),
    (["--space", "conv:atoms=4"], "conv has no searchable option 'atoms'"),
    (["--set", "lr=0.1"], "--set lr is the study's own"),
    (["--budget", "params=10k,20k"], "one budget at a time"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "--storage postgresql://nobody@127.0.0.1:1/none: cannot "
                                                            "open the study storage"),
])
def test_bad_input_is_one_line_and_nothing_is_written(argv: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    try:
        status = main(["tune", *SMOKE, "--out", str(out), *argv])
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == (1 if argv[0] == "--storage" else 2)
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_without_optuna_tune_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    assert main(["tune", *SMOKE, "--convs", "conv", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "factorconv tune needs Optuna: pip install 'factorconv[tune]'" in err
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------- a real tuning study

def _tune(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "factorconv", "tune", *SMOKE, "--convs", "conv,igcv2",
                             "--trials", "4", "--workers", "2", "--out", str(out), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _trials(out: Path) -> dict[str, list]:
    spec = TuneSpec.from_dict(__import__("json").loads((out / "tune.json").read_text())["spec"])
    return {op: optuna.load_study(study_name=spec.study_name(op), storage=f"sqlite:///{out / 'tune.db'}").trials
            for op in spec.convs}


def _result_times(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (out / "trials").rglob("result.json")}


def test_sigkill_mid_search_then_the_same_command_keeps_every_finished_trial(tmp_path: Path) -> None:
    out = tmp_path / "study"
    driver = _tune(out)
    deadline = time.monotonic() + 120
    running: list = []
    while time.monotonic() < deadline and driver.poll() is None:  # kill with trials finished and one training
        if (out / "trials").exists() and len(_result_times(out)) >= 2:
            running = [t for ts in _trials(out).values() for t in ts if t.state.name == "RUNNING"
                       and "run_dir" in t.user_attrs and not (Path(t.user_attrs["run_dir"]) / "result.json").exists()]
            if running:
                break
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers' group: nothing is left to finish cleanly
    _, first_err = driver.communicate()
    assert running, "the kill came with no trial training: the test would not test recovery"
    before = _result_times(out)
    told_before = {op: [t.number for t in ts if t.state.name in ("COMPLETE", "PRUNED")]
                   for op, ts in _trials(out).items()}

    again = _tune(out)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-3000:]
    assert "database is locked" not in first_err + stderr
    after = _result_times(out)
    assert {p: t for p, t in after.items() if p in before} == before  # no finished trial was trained again
    for op, trials in _trials(out).items():
        counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(counted) == 4, (op, [(t.number, t.state.name) for t in trials])  # equal effort, none twice
        assert set(told_before[op]) <= {t.number for t in counted}
        interrupted = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("duplicate")]
        assert all(t.user_attrs.get("interrupted") for t in interrupted)
        for t in interrupted:  # only an interrupted trial fails, and its parameters ran again
            assert any(r.params == t.params and r.user_attrs.get("retry_of") == t.number for r in trials)
        runs = [t.user_attrs["run_dir"] for t in counted if "run_dir" in t.user_attrs]
        assert len(runs) == len(set(runs))  # each trained trial its own run
    report = (out / "report.md").read_text()
    assert "Every operator got 4 trials" in report and "| igcv2 |" in report and "| conv |" in report
    assert (out / "confirm" / "report.md").exists()
    rebuilt = subprocess.run([sys.executable, "-m", "factorconv", "report", str(out)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert rebuilt.returncode == 0 and "conv: 4 trials" in rebuilt.stdout, rebuilt.stderr


# ----------------------------------------------------------------------------------------------- PostgreSQL

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on a free port (as the postgres user when the tests run as root: the
    server refuses root; its directory outside pytest's, which only root may enter), stopped afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL here (initdb/pg_ctl): scripts/setup.sh --dev installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver comes with the tune extra (psycopg)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a postgres user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="factorconv-pg-"))
    if prefix:
        shutil.chown(base, "postgres")
    subprocess.run([*prefix, initdb, "-D", str(base / "data"), "-A", "trust", "-U", "factorconv"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://factorconv@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(base / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_two_drivers_share_a_postgresql_storage(postgres: str, tmp_path: Path) -> None:
    """Two drivers of one tuning problem, each with its own directory, on one PostgreSQL storage at once: they
    share the trials through the storage and run `--trials` between them, not each."""
    drivers = [subprocess.Popen([sys.executable, "-m", "factorconv", "tune", *SMOKE, "--convs", "conv", "--trials",
                                 "4", "--workers", "1", "--storage", postgres, "--out", str(tmp_path / f"d{i}")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [d.communicate(timeout=300) for d in drivers]
    for d, (_, err) in zip(drivers, outputs, strict=True):
        assert d.returncode == 0, err[-3000:]
    assert not (tmp_path / "d0" / "tune.db").exists()
    spec = TuneSpec.from_dict(__import__("json").loads((tmp_path / "d0" / "tune.json").read_text())["spec"])
    trials = optuna.load_study(study_name=spec.study_name("conv"), storage=postgres).trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert len({t.user_attrs["driver"] for t in counted}) == 2  # both drivers ran some
    assert all("conv: 4 trials" in out for out, _ in outputs)

def test_a_configuration_refused_at_the_budget_width_gets_the_nearest_width_it_builds_at() -> None:
    from factorconv.budget import count_model, match_buildable_width, match_width

    with pytest.raises(ValueError, match="must divide the channels"):  # K = 8 at the width the bisection meets
        match_width("resnet20", "igcv2", 50_000, grid=1 / 16, input_size=(1, 28, 28), conv_kwargs={"K": 8})
    m = match_buildable_width("resnet20", "igcv2", 50_000, start=2.625, grid=1 / 16, input_size=(1, 28, 28),
                              conv_kwargs={"K": 8})
    assert (16 * m.width) % 8 == 0 and 1 / 1.5 <= m.value / 50_000 <= 1.5
    assert m.value == count_model("resnet20", "igcv2", m.width, input_size=(1, 28, 28), conv_kwargs={"K": 8})
    for k in range(1, 200):  # no buildable width on the grid is nearer the budget
        try:
            other = count_model("resnet20", "igcv2", k / 16, input_size=(1, 28, 28), conv_kwargs={"K": 8})
        except ValueError:
            continue
        assert abs(__import__("math").log(other / 50_000)) >= abs(__import__("math").log(m.value / 50_000)) - 1e-12
        if other > 75_000:
            break
    with pytest.raises(ValueError, match="builds at no width"):
        match_buildable_width("resnet20", "igcv2", 50_000, start=2.625, grid=1 / 16, max_factor=1.01,
                              input_size=(1, 28, 28), conv_kwargs={"K": 8})
