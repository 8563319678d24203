"""Training a model on CIFAR-10: `run(TrainConfig(...)) -> metrics`.

    from bn_keras.train import TrainConfig, run
    metrics = run(TrainConfig(model="lenet", bn="custom", epochs=10, workdir="runs/x"))

`config` (every setting and its rules; no TensorFlow), `training` (the recipe),
`callbacks` (what each epoch measures and records), `resume` and `workdir` (what a
run writes and how a stopped run continues exactly), `events` (TensorBoard files),
`diagnostics` (BN's effect on a probe batch), `distribute` (tf.distribute
strategies), `optimizers`, `losses`, and `report` (a run's Markdown report).
`run` loads TensorFlow on first use; `TrainConfig` does not.
"""

from bn_keras.train.config import TrainConfig

__all__ = ["TrainConfig", "run"]


def __getattr__(name):
    if name == "run":
        from bn_keras.train.training import run

        return run
    raise AttributeError(f"module 'bn_keras.train' has no attribute {name!r}")
