"""benchmarks/bench_pipeline.py and bench_step.py print their tables (--help, bad flags:
test_cli); no timing is asserted."""

import re

import pytest


@pytest.mark.slow
def test_pipeline_prints_one_verdict_per_target(scripts):
    proc = scripts.run("benchmarks/bench_pipeline", "--synthetic", "--synthetic_examples=256",
                       "--batch_size=32", "--steps=3", "--rounds=1", timeout=300)
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


@pytest.mark.slow
def test_step_ways_are_measured_with_both_thread_settings(scripts):
    proc = scripts.run("benchmarks/bench_step", "--batch_sizes=4", "--steps_per_call=2",
                       "--images=8", "--repeats=1", "--ways=graph,xla_while", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith(("| graph", "| xla"))]
    assert [row[:2] for row in rows] == [["graph", "4"], ["xla_while", "4"]]
    assert all(float(row[2].replace(",", "")) > 0 and float(row[3].replace(",", "")) > 0
               for row in rows)
