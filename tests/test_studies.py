"""bn_keras.studies: every study is a valid set of training configurations."""

import pytest

from bn_keras import studies, study_report


@pytest.mark.parametrize("name", list(studies.STUDIES))
@pytest.mark.parametrize("quick", [True, False])
def test_every_arm_of_every_study_is_a_valid_config(name, quick):
    s = studies.get(name, quick, data_dir="/data", seeds=2)
    assert s.name == name and s.quick == quick and s.seeds == 2
    assert s.base.data_dir == "/data" and s.base.steps_per_execution == s.loss_window
    assert set(s.sections) <= set(study_report.SECTIONS)
    assert len({a.name for a in s.arms}) == len(s.arms)
    for arm in s.arms:
        arm.config(s.base, seed=1, workdir="x").validate()
    if "accuracy_vs" in s.sections:
        assert all(s.sweep in dict(a.overrides) for a in s.arms)


def test_quick_is_smaller_than_full():
    for name in studies.STUDIES:
        quick, full = studies.get(name, True), studies.get(name, False)
        assert quick.base.epochs <= full.base.epochs
        assert quick.base.train_examples and not full.base.train_examples


def test_the_compare_study_is_the_tutorials_setting():
    s = studies.get("compare", quick=False)
    b = s.base
    assert (b.model, b.optimizer, b.learning_rate, b.batch_size, b.epochs, s.loss_window) == (
        "lenet", "adam", 1e-4, 10, 10, 500)
    assert [a.name for a in s.arms] == ["no_bn", "tutorial_as_written", "keras_bn", "our_bn"]


def test_unknown_study_names_the_choices():
    with pytest.raises(ValueError, match="Unknown study='width'; expected one of compare, lr"):
        studies.get("width", quick=True)
