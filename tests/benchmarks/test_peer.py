"""The PyTorch peer (benchmarks/peer_pytorch.py) and bench_peer's tables; no timing asserted."""

import json

import numpy as np
import pytest
from extras import needs_extra

from bn_keras import models

needs_torch = needs_extra("peer", "torch")


@pytest.fixture
def bench(load_script):
    return load_script("benchmarks/bench_peer")


def _sizes(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@needs_torch
@pytest.mark.parametrize("name", ["lenet", "resnet20"])
@pytest.mark.parametrize("bn", ["custom", "none"])
def test_peer_networks_have_our_parameters(load_script, name, bn):
    peer = load_script("benchmarks/peer_pytorch")
    ours = models.build_model(name, bn)
    theirs = peer.build_model(name, bn != "none")
    # BN's moving statistics are Keras non-trainable weights, torch buffers.
    statistics = sum(b.numel() for n, b in theirs.named_buffers()
                     if n.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in theirs.parameters()) == _sizes(ours.trainable_weights)
    assert statistics == _sizes(ours.non_trainable_weights)
    assert sum(p.numel() for p in theirs.parameters()) + statistics == ours.count_params()
    if name == "lenet" and bn == "none":
        assert ours.count_params() == 62_006  # the tutorial's


@needs_torch
@pytest.mark.parametrize("args", [["--model=lenet"], ["--model=lenet", "--nobn"],
                                  ["--model=resnet20", "--optimizer=sgd"]])
@pytest.mark.slow
def test_peer_trains_a_tiny_epoch_and_prints_one_json_line(args, scripts):
    done = scripts.run("benchmarks/peer_pytorch", *args, "--batch_size=4", "--examples=10",
                       "--epochs=1", "--threads=1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["steps_per_epoch"] == 2  # the partial last batch is dropped
    assert len(result["images_per_second"]) == 1 and result["images_per_second"][0] > 0
    assert result["threads"] == 1 and result["torch"]
    assert result["bn"] == ("--nobn" not in args)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["peer_pytorch", "bench_peer"])
def test_without_torch_the_scripts_say_how_to_install_it(name, scripts):
    done = scripts.run(f"benchmarks/{name}", prelude="import sys; sys.modules['torch'] = None")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: PyTorch is not installed; pip install -e '.[peer]'"


def test_default_cases_are_the_targeted_rows(bench):
    cases = bench.select_cases(["lenet", "resnet20"], [10, 128], [128], lenet_nobn=True)
    assert [(c.label, c.batch_size) for c in cases] == [
        ("LeNet BN", 10), ("LeNet BN", 128), ("LeNet no BN", 10), ("LeNet no BN", 128),
        ("ResNet-20 BN", 128)]
    assert bench.select_cases(["resnet20"], [10], [128], lenet_nobn=True) == [cases[-1]]


def test_steady_state_is_the_best_epoch_after_the_first(bench, tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(f"epoch,{bench.IMAGES_PER_SECOND_COLUMN},loss\n0,900,2\n1,500,1\n2,700,1\n")
    assert bench.read_images_per_second(str(path)) == [900.0, 500.0, 700.0]
    assert bench.steady_state([900.0, 500.0, 700.0]) == 700.0
    with pytest.raises(ValueError, match="at least 2 epochs"):
        bench.steady_state([900.0])
    path.write_text("epoch,img_s\n0,900\n")
    with pytest.raises(ValueError, match="IMAGES_PER_SECOND_COLUMN"):
        bench.read_images_per_second(str(path))


def _fake_samples(bench):
    case = bench.Case
    return {
        # Ratios per round 1.6, 1.55, 1.65: median 1.6 >= 1.5; they agree within 15%.
        case("lenet", True, 10): {"ours": [1600, 1550, 1650], "peer": [1000, 1000, 1000]},
        # Ratios 1.2, 1.25, 1.3: median 1.25 < 1.3.
        case("lenet", True, 128): {"ours": [12000, 12500, 13000],
                                   "peer": [10000, 10000, 10000]},
        case("lenet", False, 10): {"ours": [1800, 1800, 1900], "peer": [1300, 1200, 1100]},
        # BN costs ours 15000/12000 = 1.25, 1.2, 15000/13000: median 1.2 <= 1.2.
        case("lenet", False, 128): {"ours": [15000, 15000, 15000],
                                    "peer": [20000, 20000, 20000]},
        # Ratios 0.71, 0.86, 1.0: rounds 40% apart, no verdict.
        case("resnet20", True, 128): {"ours": [500, 600, 700], "peer": [700, 700, 700]},
    }


def test_rows_compute_ratios_and_verdicts(bench):
    samples = _fake_samples(bench)
    rows = {(r.case.label, r.case.batch_size): r for r in bench.speed_rows(samples)}
    assert rows["LeNet BN", 10].ratio == pytest.approx(1.6)
    assert rows["LeNet BN", 10].target == 1.5 and rows["LeNet BN", 10].verdict == "yes"
    assert rows["LeNet BN", 128].ratio == pytest.approx(1.25)
    assert rows["LeNet BN", 128].target == 1.3 and rows["LeNet BN", 128].verdict == "NO"
    assert rows["LeNet no BN", 10].target is None and rows["LeNet no BN", 10].verdict == "-"
    assert rows["ResNet-20 BN", 128].ratio == pytest.approx(600 / 700)
    assert rows["ResNet-20 BN", 128].verdict == "none: rounds differ by 40% (over 15%)"
    cost = {r.batch_size: r for r in bench.bn_cost_rows(samples)}
    assert sorted(cost) == [10, 128]
    assert cost[128].ours == pytest.approx([1.25, 1.2, 15000 / 13000])
    assert cost[128].peer == pytest.approx([2.0, 2.0, 2.0])
    assert cost[128].verdict == "yes"
    assert cost[10].ours == pytest.approx([1800 / 1600, 1800 / 1550, 1900 / 1650])
    assert cost[10].verdict == "yes"
    one_round = bench.speed_rows({bench.Case("lenet", True, 10): {"ours": [2000],
                                                                  "peer": [1000]}})
    assert one_round[0].met is True and one_round[0].verdict == "none: one round (2+ needed)"


def test_tables_print_figures_ratios_and_verdicts(bench):
    table = bench.format_tables(_fake_samples(bench)).splitlines()
    assert ("| LeNet BN | 10 | 1,600 (1,550-1,650) | 1,000 (1,000-1,000) | 1.60x (1.55-1.65) "
            "| >= 1.5x | yes |") in table
    assert "| LeNet BN | 128 | 12,500 (12,000-13,000) | 10,000 (10,000-10,000) " \
           "| 1.25x (1.20-1.30) | >= 1.3x | NO |" in table
    assert any(line.startswith("| LeNet no BN | 10 |") and line.endswith("| - | - |")
               for line in table)
    assert any(line.startswith("| ResNet-20 BN | 128 |")
               and line.endswith("| >= 1.0x | none: rounds differ by 40% (over 15%) |")
               for line in table)
    assert "| 128 | 1.20x (1.15-1.25) | 2.00x (2.00-2.00) | <= 1.2x | yes |" in table
    # Without the no-BN LeNet there is no BN-cost table.
    only_bn = {c: s for c, s in _fake_samples(bench).items() if c.bn}
    assert "BN LeNet time" not in bench.format_tables(only_bn)


@needs_torch
@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_runs_both_sides_and_prints_the_tables(scripts):
    done = scripts.run("benchmarks/bench_peer", "--models=lenet", "--batch_sizes=10",
                       "--rounds=1", "--epochs=2", "--lenet_examples=40", "--torch_threads=1")
    assert done.returncode == 0, done.stderr
    assert "peer: torch" in done.stdout and "threads: 1" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| LeNet")]
    assert [row.split(" | ")[:2] for row in rows] == [["| LeNet BN", "10"],
                                                      ["| LeNet no BN", "10"]]
    assert "| 10 |" in done.stdout.split("BN LeNet time")[1]
