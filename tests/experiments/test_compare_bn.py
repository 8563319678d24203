"""experiments/compare_bn.py: a thin script over bn_keras.study.report."""


def test_the_script_picks_the_study_from_its_flags(load_script, script_flags):
    script = load_script("experiments/compare_bn")
    script_flags(script, ["compare_bn", "--study=lr", "--quick", "--seeds=2", "--data_dir=/d"])
    study = script.selected_study()
    assert (study.name, study.quick, study.seeds, study.base.data_dir) == ("lr", True, 2, "/d")
