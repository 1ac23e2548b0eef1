"""The README's Quick start stays true: CI runs its test command, and the commands name real files."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in re.findall(r"```(?:bash|sh)?\n(.*?)```", section, re.S)[0].splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    main_cmd, test_cmd = _quick_start_commands()
    assert main_cmd.startswith("bash scripts/setup.sh") and ".venv/bin/factorconv" in main_cmd
    assert test_cmd.startswith("bash scripts/setup.sh --dev") and "pytest" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_setup_is_idempotent() -> None:
    """A second run (CI has just run the first) installs nothing and still succeeds."""
    if not (ROOT / ".venv" / ".factorconv-setup").exists():
        pytest.skip("no .venv made by scripts/setup.sh in this checkout")
    res = subprocess.run(["bash", "scripts/setup.sh", "--dev"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "installing" not in res.stdout, res.stdout
    assert "ready: factorconv" in res.stdout
