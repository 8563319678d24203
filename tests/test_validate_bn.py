"""experiments/validate_bn.py: the comparison table as files, and its command line."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "validate_bn.py")


def test_quick_run_writes_markdown_and_csv(tmp_path, experiment):
    rows = experiment("validate_bn").run(str(tmp_path), steps=3, timing_iterations=2, quick=True)
    assert len(rows) == 4 and all(r["passed"] for r in rows)
    with open(tmp_path / "validation.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["case"] for r in table] == [r["case"] for r in rows]
    for row in table:
        assert float(row["time_ratio"]) == pytest.approx(
            float(row["ours_ms"]) / float(row["keras_ms"]), rel=0.01)
    text = (tmp_path / "validation.md").read_text()
    assert "4/4 configurations pass" in text and "| 1x120 axis=-1 |" in text
    assert "on tensorflow" in text and "--output_dir=" in text


@pytest.mark.slow
def test_default_output_is_under_runs_not_the_committed_reports(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--timing_iterations=0",
                           "--steps=2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "validation" / "validation.md").is_file()
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert "4/4 configurations pass on tensorflow" in proc.stdout


def test_report_names_per_backend(experiment):
    stem = experiment("validate_bn").report_stem
    assert [stem(b) for b in ("tensorflow", "jax", "torch")] == [
        "validation", "validation_jax", "validation_torch"]
