"""experiments/summarize_seeds.py: one recipe over several seeds, from the runs' reports."""

import json
import shutil

import pytest

from bn_keras.train import report

pytestmark = pytest.mark.slow  # starts a process (the script, with TensorFlow)


def test_the_seeds_table_and_mean_come_from_the_reports(tmp_path, scripts):
    for stem in ("resnet20_recipe", "resnet20_recipe_seed1"):
        for suffix in (".json", ".csv"):
            shutil.copy(f"{scripts.root}/experiments/results/{stem}{suffix}", tmp_path)
    proc = scripts.run("experiments/summarize_seeds",
                       "--reports=resnet20_recipe,resnet20_recipe_seed1", "--name=both",
                       "--target=0.9125", f"--output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "both.md").read_text()
    tests = [json.loads((tmp_path / f"{s}.json").read_text())["test_accuracy"]
             for s in ("resnet20_recipe", "resnet20_recipe_seed1")]
    mean = sum(tests) / 2
    assert f"over 2 seeds: **{mean:.4f} ± " in text
    assert f"Target: mean >= 0.9125 ({'met' if mean >= 0.9125 else 'missed'}" in text
    assert json.loads((tmp_path / "both.json").read_text())["seeds"] == 2
    missing = scripts.run("experiments/summarize_seeds", "--reports=nope", "--name=x",
                          "--target=0.9", f"--output_dir={tmp_path}")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"error: no report nope.json in '{tmp_path}': write it "
                                      "with experiments/report_run.py first.")
    assert report.write_seeds  # the library function the script calls
