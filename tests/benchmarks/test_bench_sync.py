"""benchmarks/bench_sync.py times each backend's setups and prints its tables (no timing is
asserted)."""

import pytest
from extras import extra_marks

ROWS = {"tensorflow": ["one device", "per replica", "synchronized"],
        "jax": ["one device", "synchronized"],
        "torch": ["one device", "per replica", "synchronized"]}


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("backend", [
    pytest.param("tensorflow", marks=pytest.mark.proof),  # multi-process: CI's 2nd stage
    pytest.param("jax", marks=extra_marks("backends", "jax")),
    pytest.param("torch", marks=extra_marks("backends", "torch")),
])
def test_smoke_prints_every_setup_and_the_cost(scripts, backend):
    proc = scripts.run_group("benchmarks/bench_sync", "--smoke", f"--backends={backend}",
                             timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in proc.stdout.splitlines() if line.startswith(f"| {backend} |")]
    setups = [row[2] for row in rows if len(row) == 6]
    assert setups == ROWS[backend]
    assert all(float(row[3]) > 0 for row in rows if len(row) == 6)
    cost = [row for row in rows if len(row) == 3]
    assert len(cost) == 1
    assert cost[0][1].startswith("-") if backend == "jax" else cost[0][1].startswith(("+", "-"))


@pytest.mark.slow  # starts a process
def test_an_odd_global_batch_is_refused_in_one_line(scripts):
    proc = scripts.run("benchmarks/bench_sync", "--batch_size=7", "--backends=tensorflow",
                       timeout=120)
    assert proc.returncode != 0
    assert "--batch_size=7: 2 replicas need an even global batch" in proc.stderr
