"""The BN study's experiments as data: one small function per study, as Flax examples keep
one `get_config()` per setup.

Each function takes `quick` and returns a `Study`: the settings every arm shares,
the arms, the seeds, the loss window and the sections of its report
(bn_keras.study.report). `quick` is a reduced version (a training subset, fewer
epochs, BN momentum 0.9 where runs are only tens of steps long; 2-9 minutes per
study on 2 cores); the full one trains on all 45,000 training images. Adding a
study is adding one function here and naming it in `STUDIES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bn_keras.errors import InvalidSetting
from bn_keras.study.runner import Arm
from bn_keras.train.config import TrainConfig

# Quick lr/batch/depth runs take 30-160 steps: too few for momentum-0.99 moving averages to
# forget their initial 0/1 values (the momentum study shows the effect), so they use 0.9.
QUICK_MOMENTUM = {True: {"bn_momentum": 0.9}, False: {}}


@dataclasses.dataclass(frozen=True)
class Study:
    """One experiment of the BN study, in one mode (quick or full)."""

    name: str
    summary: str  # what it trains and what it shows, one line
    base: TrainConfig  # the settings every arm starts from
    arms: tuple[Arm, ...]
    loss_window: int  # steps per point of the training-loss curve (one tf.function call each)
    sections: tuple[str, ...]  # report sections, in order (bn_keras.study.report.SECTIONS)
    quick: bool
    seeds: int = 3
    title: str = ""  # of the loss-curve plot (default: the study's name)
    sweep: str | None = None  # the TrainConfig field the arms sweep, for accuracy-vs plots

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def _base(**overrides: Any) -> TrainConfig:
    """Real CIFAR-10, never downloaded, LeNet, no progress output."""
    return TrainConfig(**{"dataset": "cifar10", "download": False, "verbose": 0, "model": "lenet",
                          **overrides})


def compare_study(quick: bool) -> Study:
    return Study(
        "compare", "the tutorial's setting: LeNet, Adam lr 1e-4, batch 10, mean training loss "
        "every 500 mini-batches, test accuracy per epoch; no BN, the tutorial's network as "
        "written (BN built, never called), Keras' BN, ours",
        _base(optimizer="adam", learning_rate=1e-4, batch_size=10, epochs=3 if quick else 10,
              train_examples=10_000 if quick else None),
        (Arm("no_bn", bn="none"), Arm("tutorial_as_written", model="lenet_tutorial", bn="keras"),
         Arm("keras_bn", bn="keras"), Arm("our_bn", bn="custom")),
        loss_window=500, sections=("loss_curves", "tutorial_check", "per_epoch"), quick=quick,
        title="LeNet, Adam 1e-4, batch 10")


def lr_study(quick: bool) -> Study:
    rates = (1e-3, 1e-2, 1e-1, 1.0) if quick else (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0)
    return Study(
        "lr", "SGD (momentum 0.9) over learning rates 1e-3 .. 1, with and without BN",
        _base(optimizer="sgd", batch_size=128, epochs=2 if quick else 5,
              train_examples=10_000 if quick else None, **QUICK_MOMENTUM[quick]),
        tuple(Arm(f"{bn}@{rate:g}", bn=bn, learning_rate=rate)
              for bn in ("none", "custom") for rate in rates),
        loss_window=50, sections=("accuracy_vs",), quick=quick, sweep="learning_rate")


def batch_study(quick: bool) -> Study:
    sizes = (2, 8, 32, 128) if quick else (2, 4, 8, 16, 32, 64, 128, 256)
    arms = []
    for b in sizes:
        arms += [Arm(f"no_bn@{b}", bn="none", batch_size=b),
                 Arm(f"bn@{b}", bn="custom", batch_size=b),
                 Arm(f"renorm@{b}", bn="custom", renorm=True, batch_size=b)]
        if b >= 16:
            arms.append(Arm(f"ghost_bn_8@{b}", bn="custom", virtual_batch_size=8, batch_size=b))
    # Full: 2 epochs keep the sweep near 2 hours here (batch 2 alone is 22,500 steps per
    # epoch per run; estimated from the quick run's timings).
    return Study(
        "batch", "batch sizes 2 .. 256: no BN, BN, batch renorm, Ghost BN (groups of 8)",
        _base(optimizer="adam", learning_rate=1e-3, epochs=1 if quick else 2,
              train_examples=4_000 if quick else None, **QUICK_MOMENTUM[quick]),
        tuple(arms), loss_window=100, sections=("accuracy_vs", "re_estimated"), quick=quick,
        sweep="batch_size")


# The normalization-batch study: BN's groups (Ghost BN) at a fixed SGD batch, and the
# batch-independent normalizations in BN's place.
NORM_BATCH_SGD_BATCH = 128
NORM_BATCH_GROUPS = (2, 4, 8, 16, 32)  # and the whole batch: plain BN
# The true small-batch points: SGD batch 8, each arm's learning rate chosen on the
# validation split (seed 0) from this grid. Two points, not three (1e-4 was planned): at
# batch 8 a 10-epoch LeNet run takes about 3 minutes here, and the whole study (with the
# depth study) should fit in about two hours of this 2-core CPU.
SMALL_BATCH = 8
SMALL_BATCH_LEARNING_RATES = (3e-4, 1e-3)
SMALL_BATCH_ARMS = (("bn", "custom"), ("group_norm", "group_norm"),
                    ("layer_norm", "layer_norm"), ("no_norm", "none"))


def norm_batch_study(quick: bool) -> Study:
    groups = (2, 8) if quick else NORM_BATCH_GROUPS
    arms = [Arm(f"ghost_bn_{k}", bn="custom", virtual_batch_size=k) for k in groups]
    arms += [Arm(f"bn_{NORM_BATCH_SGD_BATCH}", bn="custom"),
             Arm("group_norm", bn="group_norm"), Arm("layer_norm", bn="layer_norm"),
             Arm("no_norm", bn="none")]
    return Study(
        "norm_batch", f"the normalization batch apart from the SGD batch: SGD batch "
        f"{NORM_BATCH_SGD_BATCH}, BN normalizing groups of {', '.join(map(str, groups))} (Ghost "
        f"BN) and the whole {NORM_BATCH_SGD_BATCH}; GroupNorm and LayerNorm in BN's place; no "
        f"normalization; then true small batches (SGD batch {SMALL_BATCH})",
        _base(optimizer="adam", learning_rate=1e-3, batch_size=NORM_BATCH_SGD_BATCH,
              epochs=2 if quick else 10, train_examples=4_000 if quick else None),
        tuple(arms), loss_window=50,
        sections=("normalization_batch", "batch_statistics", "re_estimated", "small_batch"),
        quick=quick)


def depth_study(quick: bool) -> Study:
    return Study(
        "depth", "ResNet-20 with and without BN; per-layer gradient norms at init and after "
        "training",
        _base(model="resnet20", optimizer="sgd", learning_rate=0.1, batch_size=128,
              epochs=1 if quick else 10, train_examples=5_000 if quick else None,
              diagnostics_every_n_steps=20, **QUICK_MOMENTUM[quick]),
        (Arm("resnet20_no_bn", bn="none"), Arm("resnet20_bn", bn="custom")),
        loss_window=20, sections=("loss_curves", "per_epoch", "gradient_norms"), quick=quick)


def placement_study(quick: bool) -> Study:
    return Study(
        "placement", "BN before vs after the ReLU",
        _base(optimizer="adam", learning_rate=1e-3, batch_size=128, epochs=3 if quick else 10,
              train_examples=10_000 if quick else None),
        (Arm("before_relu", bn="custom"), Arm("after_relu", bn="custom", bn_placement="after_relu"),
         Arm("no_bn", bn="none")),
        loss_window=50, sections=("loss_curves", "per_epoch"), quick=quick)


def momentum_study(quick: bool) -> Study:
    return Study(
        "momentum", "BN momentum 0.9 vs 0.99; test accuracy with moving, batch and "
        "re-estimated statistics",
        _base(optimizer="adam", learning_rate=1e-3, batch_size=128, epochs=3 if quick else 10,
              train_examples=10_000 if quick else None),
        (Arm("momentum_0.9", bn="custom", bn_momentum=0.9),
         Arm("momentum_0.99", bn="custom", bn_momentum=0.99)),
        loss_window=50, sections=("loss_curves", "per_epoch", "batch_statistics", "re_estimated"),
        quick=quick)


STUDIES: dict[str, Callable[[bool], Study]] = {
    "compare": compare_study, "lr": lr_study, "batch": batch_study, "depth": depth_study,
    "placement": placement_study, "momentum": momentum_study, "norm_batch": norm_batch_study}


def get(name: str, quick: bool, data_dir: str | None = None, seeds: int | None = None) -> Study:
    """The study `name` in quick or full mode, reading CIFAR-10 from `data_dir`."""
    if name not in STUDIES:
        raise InvalidSetting(f"Unknown study={name!r}; expected one of {', '.join(STUDIES)}.")
    study = STUDIES[name](quick)
    # One tf.function call per loss window: the same training as one step per call
    # (tests/study/test_study_runner.py), without Python's per-step overhead, which
    # dominates LeNet at batch 10.
    base = dataclasses.replace(study.base, data_dir=data_dir,
                               steps_per_execution=study.loss_window)
    return dataclasses.replace(study, base=base, seeds=seeds or study.seeds)
