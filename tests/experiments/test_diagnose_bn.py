"""experiments/diagnose_bn.py as a user meets it: the table, the exit status a CI pipeline
reads (0 healthy, 2 a finding is an error, 1 the command failed), --fix, and the data
checks skipped and named when the preprocessing is not known."""

import json
import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scripts):
    """The command's invocations, run a few at a time, and where their files went."""
    tmp = tmp_path_factory.mktemp("diagnose")
    workdir = tmp / "run"
    train = scripts.run("experiments/train", "--dataset=synthetic", "--epochs=1",
                        "--synthetic_examples=512", "--batch_size=64", f"--workdir={workdir}")
    assert train.returncode == 0, train.stderr[-3000:]
    fixed = tmp / "fixed.keras"
    invocations = {
        "tutorial": ("experiments/diagnose_bn",
                     f"--model_path={FIXTURES}/lenet_tutorial_0.1.0.keras",
                     f"--output_json={tmp / 'tutorial.json'}"),
        "fix": ("experiments/diagnose_bn", f"--workdir={workdir}", "--fix", f"--output={fixed}",
                f"--output_json={tmp / 'fix.json'}"),
        "healthy": ("experiments/diagnose_bn",
                    f"--model_path={FIXTURES}/doctor/healthy_custom.keras", "--batch_size=128"),
        "both": ("experiments/diagnose_bn", f"--workdir={workdir}",
                 f"--model_path={fixed}"),
        "twice": ("experiments/diagnose_bn", f"--workdir={workdir}", "--batch_size=8"),
    }
    done = scripts.run_all(list(invocations.values()))
    return {name: done[invocation] for name, invocation in invocations.items()}, tmp, train


def test_the_tutorials_network_fails_the_guard_in_one_line(runs):
    done, tmp, _ = runs
    proc = done["tutorial"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1] == ("lenet_tutorial: BN broken (1 error). error: bn1, bn2: never called "
                        "by the forward pass: these BN layers have no effect")
    assert "(no data: static checks only)" in lines[0]
    assert "not checked: stale_statistics: no data given" in proc.stdout
    report = json.loads((tmp / "tutorial.json").read_text())
    assert report["diagnosis"]["healthy"] is False and report["data"] is None


def test_fix_re_estimates_and_the_repaired_model_passes(runs):
    done, tmp, train = runs
    assert "BN doctor (" in train.stdout  # train.py's own checkup, at the end of the run
    assert os.path.exists(tmp / "run" / "bn_doctor.json")
    proc = done["fix"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--fix: re-estimated statistics" in proc.stdout
    report = json.loads((tmp / "fix.json").read_text())
    assert report["repair"]["applied"] and report["after"]["healthy"]
    assert report["repair"]["after"]["accuracy"] > report["repair"]["before"]["accuracy"]
    assert os.path.exists(tmp / "fixed.keras")


def test_a_healthy_model_exits_0_and_a_user_error_is_one_line(runs):
    done, _, _ = runs
    assert done["healthy"].returncode == 0, done["healthy"].stdout
    assert "BN healthy" in done["healthy"].stdout
    proc = done["both"]
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: give exactly one of --workdir or --model_path.")


def test_workdir_settings_are_not_given_twice(runs):
    proc = runs[0]["twice"]
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: --batch_size is for --model_path: the workdir's "
                                   "config.json says it.")
