"""The benchmark scripts: absl flags with a working --help, and bench_pipeline's verdicts."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("name,flags", [
    ("bench_pipeline", ["--data_dir", "--synthetic", "--batch_size", "--steps", "--rounds"]),
    ("bench_serving", ["--model", "--workdir", "--repeats"]),
    ("bench_scaling", ["--epochs", "--examples", "--batch_size"]),
])
@pytest.mark.slow
def test_help(name, flags):
    proc = _bench(name, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(ROOT, "benchmarks", f"{name}.py")) as f:
        summary = f.read().split('"""')[1].splitlines()[0]
    assert proc.stdout.startswith(summary)
    assert all(f"  {flag}" in proc.stdout or f"  --[no]{flag[2:]}" in proc.stdout
               for flag in flags), proc.stdout


@pytest.mark.slow
def test_bad_flag_is_one_line():
    proc = _bench("bench_pipeline", "--rounds=0")
    assert proc.returncode != 0
    assert "flag --rounds=0" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_pipeline_prints_one_verdict_per_target():
    proc = _bench("bench_pipeline", "--synthetic", "--synthetic_examples=256", "--batch_size=32",
                  "--steps=3", "--rounds=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| consumer"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[3:] == ["pipeline / consumer, no aug", "met, no aug",
                           "pipeline / consumer, crop + flip", "met, crop + flip"]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| LeNet training step")]
    assert [row[0] for row in rows] == [f"LeNet training step, bn={bn}"
                                        for bn in ("none", "keras", "custom")]
    for row in rows:
        assert re.fullmatch(r"\d+-\d+", row[2]), row  # min-max images/s over the rounds
        for ratio, met in ((row[3], row[4]), (row[5], row[6])):
            value = float(ratio.rstrip("x"))
            # Printed to 0.1: "5.0x" may be 4.96 (NO) or 5.04 (yes).
            expected = {"yes", "NO"} if value == 5.0 else {"yes" if value > 5 else "NO"}
            assert met in expected, row
