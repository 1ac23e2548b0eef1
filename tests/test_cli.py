"""The command line, as a user calls it."""

import json
import subprocess
import sys

import pytest

from factorconv.cli import main, parse_input_size, parse_options


def test_list(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dsep" in out and "resnet20" in out and "0.270 M" in out
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {m["name"]: m["params"] for m in data["models"]}["resnet20"] == 269_722


def test_profile_text_and_json(capsys) -> None:
    assert main(["profile", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "40,551,040" in out and "269,722" in out and "layer3.2.conv2" in out
    assert main(["profile", "resnet20", "--conv", "dsep", "--width", "2.75", "--opt", "norm=true", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert abs(data["params"] - 250_000) < 2_000


def test_profile_input_and_model_options(capsys) -> None:
    assert main(["profile", "resnet20", "--input", "1x28x28", "--model-opt", "shortcut=B", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "1x28x28" in out and "layer" not in out.split("input")[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["profile", "resnet20", "--conv", "nope"], "unknown conv"),
        (["profile", "resnet20", "--input", "32x32"], "CxHxW"),
        (["profile", "resnet20", "--opt", "norm"], "key=value"),
        (["profile", "resnet20", "--conv", "dsep", "--opt", "atoms=3"], "atoms"),
        (["profile", "nonet"], "unknown model"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, argv, needle) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_parsers() -> None:
    assert parse_options(["a=8", "b=net", "c=true", "d=(1, 2)", "e=none", "f=0.5"]) == {
        "a": 8, "b": "net", "c": True, "d": (1, 2), "e": None, "f": 0.5
    }
    assert parse_input_size("3x224x224") == (3, 224, 224)


def test_console_entry_point_runs() -> None:
    res = subprocess.run([sys.executable, "-m", "factorconv", "profile", "resnet20", "--summary"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "269,722" in res.stdout


def test_plan_prints_the_factor_plan(capsys) -> None:
    import factorconv as fc

    assert main(["plan", "osep", "64", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    want = fc.plan_osep(64, 64, 3)
    assert [p["groups"] for p in plan["parts"]] == list(want.groups) and plan["params"] == want.params
    assert plan["connectivity"]["dense"] and plan["volumetric_rf_ok"] and plan["dense_params"] == 64 * 64 * 9
    assert plan["macs"] == fc.create_conv2d(64, 64, 3, conv="osep", padding=1).cost((32, 32)).macs
    assert main(["plan", "igcv2", "64", "--K", "8"]) == 0
    out = capsys.readouterr().out
    assert "branch 8" in out and "exactly one path per input-output pair" in out
    assert main(["plan", "igcv2", "64", "128"]) == 2
    assert "keeps its width" in capsys.readouterr().err
