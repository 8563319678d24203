"""benchmarks/bench_layer.py runs and prints its tables (no timing is asserted)."""

import pytest

TINY = ["--rounds=1", "--iterations=1", "--steps_per_call=2"]


@pytest.mark.slow
def test_table_has_one_row_per_shape(scripts):
    proc = scripts.run("benchmarks/bench_layer", "--shapes=8x12,4x6x6x16", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [row.split(" | ")[0] for row in rows] == ["| (8, 12)", "| (4, 6, 6, 16)"]


def test_crossover_times_both_tensorflow_paths(capsys, load_script):
    bench = load_script("benchmarks/bench_layer")
    bench.CROSSOVER_SHAPES = [(4, 6, 6, 16)]
    bench.crossover(rounds=1, iterations=1, steps_per_call=2)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| (")]
    assert len(rows) == 1 and rows[0].startswith("| (4, 6, 6, 16) | 2304 |")
