"""experiments/validate_bn.py: the comparison table as files, and its command line."""

import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "validate_bn.py")


def test_quick_run_writes_markdown_and_csv(tmp_path, experiment):
    rows = experiment("validate_bn").run(str(tmp_path), steps=3, timing_iterations=2, quick=True)
    assert len(rows) == 4 and all(r["passed"] for r in rows)
    with open(tmp_path / "validation.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["case"] for r in table] == [r["case"] for r in rows]
    assert all(float(r["time_ratio"]) > 0 for r in table)
    text = (tmp_path / "validation.md").read_text()
    assert "4/4 configurations pass" in text and "| 1x120 axis=-1 |" in text


def test_bad_flag_is_one_line_and_non_zero_exit():
    proc = subprocess.run([sys.executable, SCRIPT, "--steps=0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "--steps" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_the_flags():
    proc = subprocess.run([sys.executable, SCRIPT, "--helpfull"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "--output_dir" in proc.stdout and "--timing_iterations" in proc.stdout
