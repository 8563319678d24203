"""bn_keras.cli: --verbosity read before TensorFlow starts, and the scripts' common shape."""

import signal

import pytest

from bn_keras import cli


@pytest.mark.parametrize("argv,expected", [
    ([], None), (["--verbosity=0"], 0), (["--verbosity", "1"], 1), (["-v", "2"], 2),
    (["-v=-1"], -1), (["--verbosity=x"], None), (["--epochs=3"], None),
])
def test_verbosity_is_read_from_argv(argv, expected):
    assert cli.verbosity(["script.py", *argv]) == expected


# Every script: what its --help must list, and one bad flag with what its one line names.
HELP = {
    "experiments/train": ["--model", "--bn", "--workdir", "--data_dir"],
    "experiments/compare_bn": ["--study", "--quick", "--seeds"],
    "experiments/tune": ["--tuner", "--max_epochs"],
    "experiments/export": ["--workdir", "--name"],
    "experiments/predict": ["--saved_model", "--top_k"],
    "experiments/validate_bn": ["--output_dir", "--timing_iterations"],
    "experiments/verify_export": ["--saved_model", "--tolerance"],
    "experiments/launch_local_workers": ["--num_workers", "--timeout"],
    "experiments/tensorboard_screenshots": ["--logdir", "--output_dir"],
    "experiments/report_run": ["--workdir", "--command"],
    "experiments/diagnose_bn": ["--workdir", "--model_path", "--preprocessing", "--fix",
                                "--output_json"],
    "experiments/doctor_catalogue": ["--data_dir", "--runs_dir", "--workdirs"],
    "benchmarks/bench_pipeline": ["--data_dir", "--synthetic", "--batch_size", "--steps",
                                  "--rounds"],
    "benchmarks/bench_serving": ["--model", "--workdir", "--repeats"],
    "benchmarks/bench_scaling": ["--epochs", "--examples", "--batch_size"],
    "benchmarks/bench_layer": ["--shapes", "--rounds", "--xla"],
    "benchmarks/bench_step": ["--model", "--batch_sizes", "--steps_per_call", "--ways"],
}
# Words a --help must show besides its flags: the choices a user picks from.
HELP_MENTIONS = {"experiments/compare_bn": ["compare", "momentum"]}
BAD_FLAGS = {
    "experiments/compare_bn": (["--study=width"], "--study"),
    "experiments/validate_bn": (["--steps=0"], "--steps"),
    "benchmarks/bench_pipeline": (["--rounds=0"], "flag --rounds=0"),
    "benchmarks/bench_layer": (["--shapes=12"], "--shapes: '12' is not a shape like 128x120"),
}


@pytest.fixture(scope="module")
def runs(scripts):
    """Every --help and bad-flag run of this module, started a few at a time."""
    invocations = [(script, "--help") for script in HELP]
    invocations += [(script, *args) for script, (args, _) in BAD_FLAGS.items()]
    return scripts.run_all(invocations)


@pytest.mark.slow
@pytest.mark.parametrize("script", HELP)
def test_every_script_has_help(runs, scripts, script):
    proc = runs[(script, "--help")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(scripts.path(script)) as f:
        summary = f.read().split('"""')[1].strip().splitlines()[0]
    assert proc.stdout.startswith(summary), proc.stdout[:300]
    assert all(f"  {flag}" in proc.stdout or f"  --[no]{flag[2:]}" in proc.stdout
               for flag in HELP[script]), proc.stdout
    assert all(word in proc.stdout for word in HELP_MENTIONS.get(script, [])), proc.stdout
    assert proc.stderr == ""  # no TensorFlow start-up chatter either


@pytest.mark.slow
@pytest.mark.parametrize("script", BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_a_non_zero_exit(runs, script):
    args, named = BAD_FLAGS[script]
    proc = runs[(script, *args)]
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    # One line, ours: absl's own report of a bad flag is a FATAL line and a hint line.
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], (
        proc.stderr[-2000:])


@pytest.mark.parametrize("backend,imported", [("jax", False), ("torch", False),
                                              ("tensorflow", True)])
@pytest.mark.slow
def test_tensorflow_is_imported_only_for_the_tensorflow_backend(backend, imported, scripts):
    # On a GPU machine without TensorFlow, and since torch with TensorFlow in one process
    # can crash, scripts that run on any backend must not import it there.
    code = ("import sys; from bn_keras import cli; cli.quiet_tensorflow([]); "
            "print('tensorflow' in sys.modules)")
    proc = scripts.run(None, prelude=code, env={"KERAS_BACKEND": backend}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(imported)


def test_library_messages_name_flags_in_a_script():
    names = {"workdir", "batch_size", "bn", "tpu", "epochs"}
    assert cli.in_flag_words("choose another `workdir`.", names) == "choose another --workdir."
    assert cli.in_flag_words("batch_size=130 is more", names) == "--batch_size=130 is more"
    assert cli.in_flag_words("pick bn=keras or bn=custom", names) == (
        "pick --bn=keras or --bn=custom")
    # Not a field of this script, inside a path, or already a flag: left alone.
    for text in ("renorm=True or synchronized=False", "/runs/epochs=3/x", "--epochs=3",
                 "`name` is not a flag here"):
        assert cli.in_flag_words(text, names) == text


def test_config_flags_carry_each_fields_help_default_and_bounds(script_flags):
    import dataclasses
    import types

    from bn_keras.train.config import TrainConfig

    module = types.SimpleNamespace(define_flags=lambda: cli.define_config_flags(TrainConfig))
    flags = script_flags(module, ["train.py", "--epochs=3", "--bn=keras"])
    for field in dataclasses.fields(TrainConfig):
        assert flags[field.name].default == field.default, field.name
        assert flags[field.name].help  # every field explains itself
    assert "--sgd_momentum" in flags["optimizer"].help  # fields named as flags
    assert flags["bn"].parser.enum_values == ["none", "keras", "custom", "group_norm",
                                             "layer_norm"]
    config = cli.config_from_flags(TrainConfig, flags, verbose=0)
    assert (config.epochs, config.bn, config.verbose, config.workdir) == (
        3, "keras", 0, "runs/lenet_keras")


# A command that answers stops from its first line and then works for a long while (as
# TensorFlow's import or a training epoch does), saying when it got there.
_STOPPABLE = """
import os, sys, time
from bn_keras import cli
cli.answer_stops()
if os.environ.get("STARTED") == "1":
    cli.exit_promptly_on_interrupt(lambda: "2 of 3 epochs saved in runs/x")
if os.environ.get("PLAIN") == "1":
    cli.exit_promptly_on_interrupt(None)
open(os.environ["READY"], "w").close()
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum,code,env,line", [
    (signal.SIGINT, 130, {}, "interrupted while starting; nothing was written."),
    (signal.SIGHUP, 129, {}, "interrupted while starting; nothing was written."),
    (signal.SIGTERM, 143, {"STARTED": "1"},
     "interrupted: 2 of 3 epochs saved in runs/x; run the same command again to resume."),
    (signal.SIGTERM, 143, {"PLAIN": "1"}, "interrupted."),  # a command with nothing to resume
], ids=["ctrl-c while starting", "sighup", "sigterm in a run", "sigterm, no resume"])
def test_every_stop_is_one_line_and_its_exit_status(tmp_path, scripts, wait_for, signum,
                                                    code, env, line):
    ready = tmp_path / "ready"
    proc = scripts.start(None, prelude=_STOPPABLE, env={"READY": str(ready), **env})
    wait_for(ready.exists, "the command started")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err.strip() == line and "Traceback" not in err


@pytest.mark.slow
def test_a_closed_stdout_cannot_stop_the_stop(tmp_path, scripts, wait_for):
    """`train.py ... | tee run.log` and Ctrl-C: tee dies first; printing the line then fails
    (BrokenPipeError), and the process must still exit, not train on ignoring signals."""
    ready = tmp_path / "ready"
    proc = scripts.start(None, prelude=_STOPPABLE.replace(
        'open(os.environ["READY"]', 'print("x" * 100, flush=True); open(os.environ["READY"]'),
        env={"READY": str(ready), "STARTED": "1"})
    wait_for(ready.exists, "the command started")
    proc.stdout.close()  # the reader of its stdout is gone
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130


@pytest.mark.slow
def test_words_that_are_not_flags_are_refused(tmp_path, scripts):
    """`--augment False` turned augmentation on and dropped "False"; `-- --epochs=3` trained
    the default epochs; `--workdir=` (an unset variable) trained into runs/lenet_custom."""
    common = ["--dataset=synthetic", "--epochs=1", "--synthetic_examples=256"]
    runs = scripts.run_all([
        ("experiments/train", *common, "--augment", "False", f"--workdir={tmp_path / 'a'}"),
        ("experiments/train", *common, f"--workdir={tmp_path / 'b'}", "--", "--epochs=3"),
        ("experiments/train", *common, "--workdir="),
    ])
    messages = [proc.stderr.strip() for proc in runs.values()]
    assert all(proc.returncode == 1 for proc in runs.values()), messages
    assert messages[0].startswith("error: unexpected argument 'False': flags take the form "
                                  "--name=value (a yes/no flag: --name or --noname)")
    assert messages[1].startswith("error: unexpected argument '--epochs=3'")
    assert messages[2] == ("error: --workdir='' names no directory; give a path (None: "
                           "runs/<model>_<bn>).")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
