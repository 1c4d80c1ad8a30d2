"""`make test` runs the deploy checks even when the Rust tests fail, and fails when either does:
the real Makefile recipe, run by make with stand-ins for cargo and pytest that record their calls
and fail on demand (the `components` prerequisite is taken as done)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import deploylib

STAND_IN = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$*" in
  {fail_on}) exit 3 ;;
esac
exit 0
"""


def run_make_test(tmp_path: Path, cargo_fails_on: str, pytest_fails: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is missing: install it (apt-get install make)")
    log = tmp_path / "calls.log"
    cargo = tmp_path / "cargo"
    cargo.write_text(STAND_IN.format(log=log, fail_on=cargo_fails_on))
    python = tmp_path / "python"
    python.write_text(STAND_IN.format(log=log, fail_on='"-m pytest"*' if pytest_fails else "no-such-call"))
    for stand_in in (cargo, python):
        stand_in.chmod(0o755)
    # The stand-in cargo comes first on PATH, so the recipe's `cargo` is it.
    env = {**os.environ, "MAKEFLAGS": "", "PATH": f"{tmp_path}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [make, "--no-print-directory", "-o", "components", "test", f"PYTHON={python}"],
        cwd=deploylib.REPO, capture_output=True, text=True, timeout=60, env=env,
    )
    return done, log.read_text().splitlines() if log.exists() else []


def test_the_deploy_checks_run_after_a_failed_rust_suite_and_the_target_fails(tmp_path):
    done, calls = run_make_test(tmp_path, cargo_fails_on='"nextest run"*', pytest_fails=False)
    assert "python -m pytest -q tests/deploy" in calls, f"pytest never ran after the Rust failure: {calls}\n{done.stderr}"
    assert done.returncode != 0, "make test passed although the Rust tests failed"
    assert "the Rust tests failed" in done.stderr, done.stderr


def test_a_failed_deploy_check_fails_the_target(tmp_path):
    done, calls = run_make_test(tmp_path, cargo_fails_on="no-such-call", pytest_fails=True)
    assert any(c.startswith("cargo nextest run") for c in calls), calls
    assert done.returncode != 0 and "tests/deploy failed" in done.stderr, done.stderr


def test_all_passing_passes(tmp_path):
    done, calls = run_make_test(tmp_path, cargo_fails_on="no-such-call", pytest_fails=False)
    assert done.returncode == 0, done.stderr
    assert [c.split()[1] for c in calls if c.startswith("cargo")][:3] == ["build", "nextest", "nextest"], calls
