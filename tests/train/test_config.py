"""bn_keras.train.config: every rule checked before a run writes anything, and train.py's flags."""

import dataclasses

import pytest

from bn_keras.train.config import TrainConfig, differences, resume_conflicts


@pytest.mark.parametrize("overrides,pattern", [
    (dict(bn="batch"), "bn='batch' is not one of none, keras, custom"),
    (dict(model="vgg"), "model='vgg' is not one of lenet, resnet20"),
    (dict(epochs=0), "epochs must be at least 1, got 0"),
    (dict(learning_rate=-1.0), "learning_rate must be a positive number, finite in float32"),
    (dict(learning_rate=float("inf")), "learning_rate must be a positive number"),
    # Finite in Python, infinite as the float32 variable it becomes.
    (dict(learning_rate=1e39), r"finite in float32 \(at most 3.4e38\), got 1e\+39"),
    (dict(bn_momentum=1.0), r"bn_momentum must be a number in \[0, 1\), got 1.0"),
    (dict(sgd_momentum=float("nan")), r"sgd_momentum must be a number in \[0, 1\), got nan"),
    (dict(label_smoothing=1.0), r"label_smoothing must be a number in \[0, 1\)"),
    (dict(weight_decay=-1e-4), r"weight_decay must be a number in \[0, 1\]"),
    (dict(weight_decay=float("nan")), r"weight_decay must be a number in \[0, 1\], got nan"),
    (dict(seed=-1), r"seed must be a number in \[0, 4294967295\]"),
    # Nothing is allocated in proportion to a flag beyond the data it asks for.
    (dict(dataset="synthetic", batch_size=100_000_000),
     "batch_size=100000000 is more than the 1,024 training examples"),
    (dict(train_examples=100, batch_size=128), "more than the 100 training examples"),
    (dict(threads=-1), "threads must be at least 0, got -1"),
    # Every number has a range that fits the machine: 10^8 threads filled 24 GB.
    (dict(threads=100_000_000), "threads=100000000 is far more than this machine's"),
    (dict(dataset="synthetic", synthetic_examples=100_000_000),
     "synthetic_examples must be at most 1,000,000, got 100,000,000"),
    # Types, as a notebook or a tampered config.json may give them.
    (dict(epochs=2.5), "epochs=2.5 is not an int"),
    (dict(augment="False"), "augment='False' is not a bool"),
    (dict(batch_size=True), "batch_size=True is not an int"),
    (dict(model=None), "model=None: a str is needed"),
    (dict(workdir=""), "workdir='' names no directory"),
    (dict(model="conv1d_example", dataset="cifar10"), "synthetic"),
    (dict(model="conv1d_example", dataset="synthetic", bn="none"), "tutorial's BN example"),
    (dict(strategy="tpu"), "needs a TPU address"),
    (dict(bn="none", renorm=True), "renorm=True needs BN"),
    (dict(bn="keras", virtual_batch_size=8), "needs bn='custom'"),
    # Ghost BN: the group size must divide the batch per replica, named with both values.
    (dict(virtual_batch_size=7, batch_size=128),
     "virtual_batch_size=7 does not divide the batch size per replica 128"),
    # The layer's own rule (Ghost BN with renorm), found by asking the layer, not copied.
    (dict(virtual_batch_size=8, renorm=True), "virtual_batch_size"),
])
def test_bad_config_names_the_field(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**overrides).validate()


@pytest.mark.parametrize("overrides", [
    dict(virtual_batch_size=100, batch_size=100),  # a group of the whole batch is valid
    dict(virtual_batch_size=8, batch_size=128),
    dict(model="conv1d_example", dataset="synthetic", bn="keras"),
    dict(lr_schedule="warmup_cosine", warmup_epochs=1, epochs=1),
])
def test_good_configs_pass(overrides):
    TrainConfig(**overrides).validate()


def test_small_steps_on_one_device_run_on_one_thread():
    assert TrainConfig(model="lenet", batch_size=10).resolved_threads() == 1
    assert TrainConfig(model="lenet", batch_size=32).resolved_threads() == 1
    assert TrainConfig(model="lenet", batch_size=64).resolved_threads() == 0
    assert TrainConfig(model="resnet20", batch_size=1).resolved_threads() == 0
    assert TrainConfig(model="lenet", batch_size=10, strategy="mirrored").resolved_threads() == 0
    assert TrainConfig(batch_size=128, threads=1).resolved_threads() == 1


def test_model_options_per_replica():
    assert TrainConfig(bn="custom").model_options(2) == {
        "momentum": 0.99, "synchronized": True, "placement": "before_relu"}
    # Ghost batches are per replica by nature.
    assert not TrainConfig(virtual_batch_size=8).model_options(2)["synchronized"]
    assert TrainConfig(bn="none").model_options(2) == {"placement": "before_relu"}


def test_steps_per_execution_default_divides_the_loss_window():
    assert TrainConfig(log_every_n_steps=100).resolved_steps_per_execution() == 50
    assert TrainConfig(log_every_n_steps=7).resolved_steps_per_execution() == 7
    assert TrainConfig(log_every_n_steps=500).resolved_steps_per_execution() == 50
    assert TrainConfig(log_every_n_steps=97).resolved_steps_per_execution() == 1
    assert TrainConfig(steps_per_execution=3).resolved_steps_per_execution() == 3
    assert TrainConfig().resolved_steps_per_execution(mirrored_replicas=2) == 1
    with pytest.raises(ValueError, match="steps_per_execution=4 does not work with 2 replicas"):
        TrainConfig(steps_per_execution=4).resolved_steps_per_execution(mirrored_replicas=2)


def test_a_field_an_older_record_lacks_counts_as_its_default():
    recorded = dataclasses.asdict(TrainConfig(epochs=10))
    del recorded["sgd_momentum"]  # as if written before the field existed
    assert differences(recorded, TrainConfig(epochs=10)) == {}
    assert differences(recorded, TrainConfig(epochs=10, sgd_momentum=0.5)) == {
        "sgd_momentum": (0.9, 0.5)}
    assert resume_conflicts(recorded, TrainConfig(epochs=10), 4) is None
    recorded["weight_decay"] = float("nan")  # refused today, written by an older version
    assert differences(recorded, TrainConfig(epochs=10, weight_decay=float("nan"))) == {}


def test_resume_conflicts():
    old = dataclasses.asdict(TrainConfig(epochs=10))
    assert resume_conflicts(old, TrainConfig(epochs=10, verbose=1, data_dir="/elsewhere"),
                            4) is None
    assert resume_conflicts(old, TrainConfig(epochs=20), 10) is None  # constant lr: train more
    assert "other settings (bn: 'custom' -> 'keras', learning_rate: 0.001 -> 0.1)" in \
        resume_conflicts(old, TrainConfig(epochs=10, bn="keras", learning_rate=0.1), 4)
    assert "holds 10 trained epochs, more than epochs=5" in \
        resume_conflicts(old, TrainConfig(epochs=5), 10)
    cosine = dataclasses.asdict(TrainConfig(epochs=10, lr_schedule="cosine"))
    assert "is shaped by the number of epochs" in resume_conflicts(
        cosine, TrainConfig(epochs=20, lr_schedule="cosine"), 10)


@pytest.mark.slow
def test_a_config_is_built_validated_and_compared_without_tensorflow(scripts):
    code = ("import dataclasses, sys; from bn_keras.train import TrainConfig, config; "
            "c = TrainConfig(epochs=3, renorm=True); c.validate(); "
            "print(config.resume_conflicts(dataclasses.asdict(c), c, 1), "
            "'tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = scripts.run(None, prelude=code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", "False", "False"]


def test_train_flags_make_the_config(load_script, script_flags):
    script = load_script("experiments/train")
    flags = script_flags(script, ["train.py", "--model=resnet20", "--bn=keras", "--epochs=3",
                                  "--weight_decay=5e-4", "--nesterov", "--label_smoothing=0.1",
                                  "--virtual_batch_size=8"])
    config = script.config_from_flags(flags, stdout_is_terminal=False)
    assert (config.model, config.bn, config.epochs, config.weight_decay, config.nesterov,
            config.label_smoothing, config.virtual_batch_size) == (
        "resnet20", "keras", 3, 5e-4, True, 0.1, 8)
    assert config.workdir == "runs/resnet20_keras"  # the default names the run
    assert config.verbose == 2  # one line per epoch in a log file ...
    assert script.config_from_flags(flags, stdout_is_terminal=True).verbose == 1  # ... a bar
    # Every TrainConfig field has a flag.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - set(flags) == set()
