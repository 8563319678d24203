"""experiments/compare_bn.py: a thin script over bn_keras.study_report."""

import pytest


@pytest.mark.slow
def test_help_lists_the_studies(run_script):
    proc = run_script("compare_bn", "--help")
    assert proc.returncode == 0
    assert "--study" in proc.stdout and "compare" in proc.stdout and "momentum" in proc.stdout


@pytest.mark.slow
def test_unknown_study_is_one_line_and_non_zero_exit(run_script):
    proc = run_script("compare_bn", "--study=width", timeout=120)
    assert proc.returncode != 0
    assert "--study" in proc.stderr and "Traceback" not in proc.stderr


def test_the_script_picks_the_study_from_its_flags(experiment, script_flags):
    script = experiment("compare_bn")
    script_flags(script, ["compare_bn", "--study=lr", "--quick", "--seeds=2", "--data_dir=/d"])
    s = script.selected_study()
    assert (s.name, s.quick, s.seeds, s.base.data_dir) == ("lr", True, 2, "/d")
