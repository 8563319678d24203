"""experiments/compare_bn.py: a thin script over bn_keras.study_report."""


def test_the_script_picks_the_study_from_its_flags(experiment, script_flags):
    script = experiment("compare_bn")
    script_flags(script, ["compare_bn", "--study=lr", "--quick", "--seeds=2", "--data_dir=/d"])
    s = script.selected_study()
    assert (s.name, s.quick, s.seeds, s.base.data_dir) == ("lr", True, 2, "/d")
