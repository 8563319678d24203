"""benchmarks/gpu_backends.py: the results table, and a smoke run of one part."""

import json

import pytest
from extras import needs_extra


def test_results_table_reads_every_part(tmp_path, load_script):
    (tmp_path / "validation_jax.md").write_text("# x\n\n30/30 configurations pass. Columns...\n")
    lenet = {"device": "NVIDIA H100 80GB HBM3", "versions": "Keras 3.15.1 on jax 0.11",
             "images_per_second": {"none": {"10": 100.0, "128": 1000.0},
                                   "keras": {"10": 80.0, "128": 800.0},
                                   "custom": {"10": 88.0, "128": 1000.0}}}
    (tmp_path / "lenet_jax.json").write_text(json.dumps(lenet))
    peer = {"device": "NVIDIA H100 80GB HBM3", "versions": "torch 2.11",
            "images_per_second": {"peer": {"10": 50.0, "128": 700.0}}}
    (tmp_path / "lenet_peer.json").write_text(json.dumps(peer))
    (tmp_path / "bench_layer_jax.md").write_text("| shape | ... |\n")
    script = load_script("benchmarks/gpu_backends")
    table = script.results_table(str(tmp_path), ["jax"], {("grid", "jax"): "ok"},
                                 ["10", "128"], "python benchmarks/gpu_backends.py")
    assert "- jax: NVIDIA H100 80GB HBM3, Keras 3.15.1 on jax 0.11" in table
    assert "- jax: 30/30 configurations pass ([report](validation_jax.md))" in table
    assert "| jax | custom | 88 | 1,000 |" in table
    assert "| jax | ours / keras | 1.10x | 1.25x |" in table
    assert "| PyTorch (tutorial's LeNet + BN, eager) | peer | 50 | 700 |" in table
    assert "| grid | ok |" in table and "| lenet | - |" in table
    assert "### jax" in table


@pytest.mark.slow
@needs_extra("peer", "torch")
def test_smoke_run_of_the_peer_part_writes_the_table(tmp_path, scripts):
    proc = scripts.run("benchmarks/gpu_backends", "--smoke", "--parts=peer",
                       f"--output_dir={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "lenet_peer.json") as f:
        peer = json.load(f)["images_per_second"]["peer"]
    assert sorted(peer) == ["16", "8"]
    table = (tmp_path / "gpu_backends.md").read_text()
    assert "| PyTorch (tutorial's LeNet + BN, eager) | peer |" in table
    assert (tmp_path / "logs" / "peer_torch.log").is_file()
