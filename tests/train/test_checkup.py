"""bn_keras.train.checkup: the BN doctor on a finished run, from its work directory; what
experiments/train.py writes at the end of a run (bn_doctor.json) and report_run shows."""

import json
import os

import pytest

from bn_keras import atomic
from bn_keras.errors import InvalidSetting, NotFound
from bn_keras.train import checkup, report, training
from bn_keras.train.config import TrainConfig

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = TrainConfig(model="lenet", bn="custom", dataset="synthetic",
                         synthetic_examples=512, epochs=1, batch_size=64, workdir=workdir,
                         verbose=0)
    training.run(config)
    return config


def test_the_checkup_works_on_a_copy_and_is_written_in_the_workdir(run):
    files = ("final.keras", "final_metrics.json")
    before = {name: atomic.sha256(os.path.join(run.workdir, name)) for name in files}
    found = checkup.write_run_checkup(run.workdir)
    assert {name: atomic.sha256(os.path.join(run.workdir, name)) for name in files} == before
    assert checkup.read_run_checkup(run.workdir) == found
    diagnosis = found.diagnosis
    assert diagnosis.bn_layers == ("conv1_bn", "conv2_bn", "fc1_bn", "fc2_bn")
    assert diagnosis.updates == 8 and diagnosis.updates_source == "the optimizer's iterations"
    # 8 updates at momentum 0.99: the statistics are still mostly initial, and say so
    assert diagnosis.find("initial_statistics").severity == "warning"
    assert "small_batch" not in diagnosis.skipped  # config.json gave the batch size
    m = diagnosis.measurement
    assert (m.calibration_examples, m.moving.examples) == (512, 128)
    assert found.data.startswith("synthetic, cifar_normalized")
    assert 0 < found.seconds < 60


def test_the_run_report_shows_it(run, tmp_path):
    checkup.write_run_checkup(run.workdir)
    path = report.write(run.workdir, str(tmp_path), "run", "python experiments/train.py ...")
    text = open(path).read()
    assert "## BN doctor" in text and "| warning | initial_statistics |" in text


def test_a_directory_without_a_finished_run(tmp_path):
    with pytest.raises(NotFound, match="no finished training run"):
        checkup.run_inputs(str(tmp_path))
    with pytest.raises(InvalidSetting, match="preprocessing='raw'"):
        checkup.images_data("synthetic", None, "raw", 32)


def test_the_checkup_reads_back_from_json(run):
    found = checkup.write_run_checkup(run.workdir, calibration_examples=64,
                                      evaluation_examples=64)
    value = json.loads(json.dumps(found.to_json()))
    assert checkup.Checkup.from_json(value) == found


def test_a_non_chief_worker_does_not_wait_for_the_chiefs_final_model(tmp_path, monkeypatch):
    """A non-chief worker ends its run while the chief may still be writing final.keras:
    it writes no checkup and never looks for one (CI once caught the race)."""
    atomic.write_json(str(tmp_path / "config.json"),
                      {"model": "lenet", "strategy": "multi_worker_mirrored"})
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert checkup.write_run_checkup(str(tmp_path)) is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(NotFound, match="no finished training run"):  # the chief does look
        checkup.write_run_checkup(str(tmp_path))
