"""experiments/validate_bn.py: the comparison table as files, and its command line."""

import csv
import os

import pytest


def test_quick_run_writes_markdown_and_csv(tmp_path, load_script):
    script = load_script("experiments/validate_bn")
    rows = script.run(str(tmp_path), steps=3, timing_iterations=2, quick=True)
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
def test_default_output_is_under_runs_not_the_committed_reports(tmp_path, scripts):
    proc = scripts.run("experiments/validate_bn", "--quick", "--timing_iterations=0",
                       "--steps=2", cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "validation" / "validation.md").is_file()
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert "4/4 configurations pass on tensorflow" in proc.stdout


def test_report_names_per_backend(load_script):
    stem = load_script("experiments/validate_bn").report_stem
    assert [stem(b) for b in ("tensorflow", "jax", "torch")] == [
        "validation", "validation_jax", "validation_torch"]
