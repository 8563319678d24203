"""benchmarks/bench_layer.py runs and prints its tables (no timing is asserted)."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_layer.py")
TINY = ["--rounds=1", "--iterations=1", "--steps_per_call=2"]


def _run(*flags):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow
def test_table_has_one_row_per_shape():
    proc = _run("--shapes=8x12,4x6x6x16", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [row.split(" | ")[0] for row in rows] == ["| (8, 12)", "| (4, 6, 6, 16)"]


def test_crossover_times_both_tensorflow_paths(capsys):
    spec = importlib.util.spec_from_file_location("bench_layer", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.CROSSOVER_SHAPES = [(4, 6, 6, 16)]
    bench.crossover(rounds=1, iterations=1, steps_per_call=2)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| (")]
    assert len(rows) == 1 and rows[0].startswith("| (4, 6, 6, 16) | 2304 |")
