"""bn_keras.study.tuning and experiments/tune.py: a keras-tuner search on synthetic data."""

import json
import os

import pytest

from bn_keras.study import tuning
from bn_keras.train.config import TrainConfig


def _base(tmp_path, **overrides):
    values = dict(dataset="synthetic", synthetic_examples=256, epochs=1, batch_size=32,
                  bn_momentum=0.9, verbose=0, workdir=str(tmp_path), probe_size=32)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_tune_script_writes_its_table(tmp_path, load_script):
    script = load_script("experiments/tune")
    out = script.run("random", "lenet", "synthetic", None, max_trials=2, max_epochs=1,
                     train_examples=None, synthetic_examples=128,
                     workdir=str(tmp_path / "work"), output_dir=str(tmp_path / "out"), seed=0)
    assert out.report == str(tmp_path / "out" / "tune_random_lenet_synthetic.md")
    report = open(out.report).read()
    assert report.count("\n| ") == 2 + 1  # header + 2 trials (the separator starts with |-)
    assert f"test accuracy **{out.best.result.test_accuracy:.4f}**" in report
    assert os.path.isdir(tmp_path / "work" / "tensorboard")


@pytest.mark.slow
def test_hyperband_searches_continues_trials_quietly_and_retrains_the_best(tmp_path, recwarn):
    # max_epochs=3, factor 3: bracket 1 runs 3 one-epoch trials and continues the best
    # from its checkpoint, where Keras warns that the unbuilt optimizer skips saved slots.
    base = _base(tmp_path, synthetic_examples=64)
    tuner = tuning.make_tuner("hyperband", base, str(tmp_path / "tuner"), max_trials=1,
                              max_epochs=3)
    rows = tuning.search(tuner, 3, str(tmp_path / "tb"))
    assert len(rows) == 6  # brackets of 3 + 1 continued and 2 trials
    assert all({"bn", "learning_rate", "optimizer", "batch_size"} <= set(row) for row in rows)
    scores = [row["val_accuracy"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert any(row.get("tuner/initial_epoch", 0) > 0 for row in rows)  # a continued trial ran
    assert not [w for w in recwarn if "Skipping variable loading" in str(w.message)]
    best = tuning.retrain_best(tuner, str(tmp_path), epochs=1)
    assert best.hyperparameters == {k: v for k, v in rows[0].items()
                                       if k not in ("trial", "val_accuracy")}
    # The retrained run is an ordinary training run of the best configuration.
    with open(tmp_path / "best_retrained" / "final_metrics.json") as f:
        assert json.load(f)["test_accuracy"] == best.result.test_accuracy
    with open(tmp_path / "best_retrained" / "config.json") as f:
        config = json.load(f)
    searched = {k: v for k, v in best.hyperparameters.items() if not k.startswith("tuner/")}
    assert {k: config[k] for k in searched} == searched
    with pytest.raises(ValueError, match="Unknown tuner='grid'"):
        tuning.make_tuner("grid", base, str(tmp_path), 1, 1)


def test_missing_data_is_found_before_the_search_writes_anything(tmp_path):
    base = _base(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tuning.make_tuner("random", base, str(tmp_path / "tuner"), max_trials=1, max_epochs=1)
    assert not (tmp_path / "tuner").exists()


def test_a_damaged_search_state_is_one_line(tmp_path):
    """keras-tuner reloads oracle.json when the directory holds a search: cut short, that
    was a JSONDecodeError traceback."""
    from bn_keras.errors import DamagedFile

    search = tmp_path / "random_search"
    search.mkdir()
    (search / "tuner0.json").write_text("{}")  # a search to reload
    (search / "oracle.json").write_text('{"ongoing_trials": {"tuner0": ')
    with pytest.raises(DamagedFile, match=r"random_search is damaged \(keras-tuner cannot "
                                          r"reload the search kept there"):
        tuning.make_tuner("random", _base(tmp_path), str(tmp_path), max_trials=1,
                          max_epochs=1)
