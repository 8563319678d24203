"""bn_keras.study.experiments: every study is a valid set of training configurations."""

import pytest

from bn_keras.study import experiments, report


@pytest.mark.parametrize("name", list(experiments.STUDIES))
@pytest.mark.parametrize("quick", [True, False])
def test_every_arm_of_every_study_is_a_valid_config(name, quick):
    study = experiments.get(name, quick, data_dir="/data", seeds=2)
    assert study.name == name and study.quick == quick and study.seeds == 2
    assert study.base.data_dir == "/data"
    assert study.base.steps_per_execution == study.loss_window
    assert set(study.sections) <= set(report.SECTIONS)
    assert len({arm.name for arm in study.arms}) == len(study.arms)
    for arm in study.arms:
        arm.config(study.base, seed=1, workdir="x").validate()
    if "accuracy_vs" in study.sections:
        assert all(study.sweep in dict(arm.overrides) for arm in study.arms)


def test_quick_is_smaller_than_full():
    for name in experiments.STUDIES:
        quick, full = experiments.get(name, True), experiments.get(name, False)
        assert quick.base.epochs <= full.base.epochs
        assert quick.base.train_examples and not full.base.train_examples


def test_the_compare_study_is_the_tutorials_setting():
    study = experiments.get("compare", quick=False)
    base = study.base
    assert (base.model, base.optimizer, base.learning_rate, base.batch_size, base.epochs,
            study.loss_window) == ("lenet", "adam", 1e-4, 10, 10, 500)
    assert [arm.name for arm in study.arms] == ["no_bn", "tutorial_as_written", "keras_bn",
                                                "our_bn"]


def test_unknown_study_names_the_choices():
    with pytest.raises(ValueError, match="Unknown study='width'; expected one of compare, lr"):
        experiments.get("width", quick=True)
