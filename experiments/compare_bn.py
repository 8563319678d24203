"""The BN study on the real CIFAR-10: the tutorial's experiment done right, and its extensions.

--study selects one experiment (each arm trained with --seeds seeds):

  compare    the tutorial's setting: LeNet, Adam lr 1e-4, batch 10, mean training loss every
             500 mini-batches, test accuracy per epoch; arms: no BN, the tutorial's network as
             written (BN built, never called), Keras' BN, ours.
  lr         SGD (momentum 0.9) over learning rates 1e-3 .. 1, with and without BN.
  batch      batch sizes 2 .. 256: no BN, BN, Ghost BN (virtual_batch_size), batch renorm.
  depth      ResNet-20 with and without BN; per-layer gradient norms at init and after training.
  placement  BN before vs after the ReLU.
  momentum   BN momentum 0.9 vs 0.99; test accuracy with moving vs batch statistics.

--quick runs a reduced version (a training subset, fewer epochs, BN momentum 0.9 where
runs are only tens of steps long; 2-9 minutes each on 2 cores); the full one trains on all
45,000 training images (10 epochs; lr 5, batch 2), up to about 2 hours. Each report
(experiments/results/study_<name>[_quick].md, PNG plots beside it) says which mode
produced it and the exact command. Runs are cached under --runs_dir: rerunning the same
command resumes an interrupted study. TensorBoard: --logdir=<runs_dir> (HParams tab).

    python experiments/compare_bn.py --study=compare --quick --data_dir=../shared/datasets/tensorflow_datasets
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
STUDIES = ("compare", "lr", "batch", "depth", "placement", "momentum")
# Quick lr/batch/depth runs take 30-160 steps: too few for momentum-0.99 moving averages to
# forget their initial 0/1 values (the momentum study shows the effect), so they use 0.9.
QUICK_MOMENTUM = {True: {"bn_momentum": 0.9}, False: {}}


def define_flags() -> None:
    flags.DEFINE_enum("study", "compare", list(STUDIES), "Which experiment to run.")
    flags.DEFINE_bool("quick", False, "Reduced version (about 10 minutes on 2 cores).")
    flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=1)
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_string("output_dir", "experiments/results", "Where reports and plots go.")
    flags.DEFINE_string("runs_dir", "runs/study", "Where each run's workdir goes (cached).")


def plan(study: str, quick: bool, data_dir: str | None):
    """(base config, arms, loss window) of a study, quick or full."""
    from bn_keras import study as st
    from bn_keras.config import TrainConfig

    base = TrainConfig(dataset="cifar10", data_dir=data_dir, download=False,
                                verbose=0, log_every_n_steps=500, model="lenet")
    if study == "compare":
        base = _replace(base, optimizer="adam", learning_rate=1e-4, batch_size=10,
                        epochs=3 if quick else 10, train_examples=10_000 if quick else None)
        arms = [st.arm("no_bn", bn="none"), st.arm("tutorial_as_written", model="lenet_tutorial",
                                                    bn="keras"),
                st.arm("keras_bn", bn="keras"), st.arm("our_bn", bn="custom")]
        return base, arms, 500
    if study == "lr":
        rates = (1e-3, 1e-2, 1e-1, 1.0) if quick else (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0)
        base = _replace(base, optimizer="sgd", batch_size=128, epochs=2 if quick else 5,
                        train_examples=10_000 if quick else None, **QUICK_MOMENTUM[quick])
        arms = [st.arm(f"{bn}@{lr:g}", bn=bn, learning_rate=lr)
                for bn in ("none", "custom") for lr in rates]
        return base, arms, 50
    if study == "batch":
        sizes = (2, 8, 32, 128) if quick else (2, 4, 8, 16, 32, 64, 128, 256)
        # Full: 2 epochs keep the sweep near 2 hours here (batch 2 alone is 22,500 steps
        # per epoch per run; estimated from the quick run's timings).
        base = _replace(base, optimizer="adam", learning_rate=1e-3, epochs=1 if quick else 2,
                        train_examples=4_000 if quick else None, **QUICK_MOMENTUM[quick])
        arms = []
        for b in sizes:
            arms += [st.arm(f"no_bn@{b}", bn="none", batch_size=b),
                     st.arm(f"bn@{b}", bn="custom", batch_size=b),
                     st.arm(f"renorm@{b}", bn="custom", renorm=True, batch_size=b)]
            if b >= 16:
                arms.append(st.arm(f"ghost_bn_8@{b}", bn="custom", virtual_batch_size=8,
                                   batch_size=b))
        return base, arms, 100
    if study == "depth":
        base = _replace(base, model="resnet20", optimizer="sgd", learning_rate=0.1,
                        batch_size=128, epochs=1 if quick else 10,
                        train_examples=5_000 if quick else None, diagnostics_every_n_steps=20,
                        **QUICK_MOMENTUM[quick])
        return base, [st.arm("resnet20_no_bn", bn="none"), st.arm("resnet20_bn", bn="custom")], 20
    if study == "placement":
        base = _replace(base, optimizer="adam", learning_rate=1e-3, batch_size=128,
                        epochs=3 if quick else 10, train_examples=10_000 if quick else None)
        return base, [st.arm("before_relu", bn="custom"),
                      st.arm("after_relu", bn="custom", bn_placement="after_relu"),
                      st.arm("no_bn", bn="none")], 50
    base = _replace(base, optimizer="adam", learning_rate=1e-3, batch_size=128,
                    epochs=3 if quick else 10, train_examples=10_000 if quick else None)
    return base, [st.arm("momentum_0.9", bn="custom", bn_momentum=0.9),
                  st.arm("momentum_0.99", bn="custom", bn_momentum=0.99)], 50


def _replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def agreement_text(results, first: str, second: str) -> str:
    """One paragraph: do two arms agree within seed noise (bn_keras.study.agreement)?"""
    from bn_keras import study as st

    a = st.agreement(results, first, second)
    if a["identical"]:
        return (f"\n{first} vs {second}: seed for seed, the runs are identical (same test "
                f"accuracies, same loss curves).\n")
    within = "within" if a["accuracy_agrees"] else "beyond"
    return (f"\n{first} vs {second}: final test accuracy differs by "
            f"{a['accuracy_difference']:+.4f}, {within} two standard errors of the difference "
            f"({a['two_standard_errors']:.4f}; a rough seed-noise check, not a significance "
            f"test); the mean loss curves are within the seed range in "
            f"{a['windows_within_seed_range']} of {a['windows']} windows (largest gap "
            f"{a['max_curve_gap']:.4f}).\n")


def batch_statistics_accuracy(model_path: str, test) -> float:
    """Test accuracy when BN normalizes each test batch with its own statistics."""
    import keras
    import numpy as np

    import bn_keras.models  # noqa: F401 - registers our layers

    model = keras.models.load_model(model_path)
    correct = total = 0
    for x, y in test:
        logits = model(x, training=True)  # batch statistics; weights are not updated here
        correct += int(np.sum(np.argmax(logits, -1) == y.numpy()))
        total += int(y.shape[0])
    return correct / total


def gradient_norm_rows(runs_dir, base, arms) -> list[dict]:
    """Per-layer gradient norms on a fixed batch: at initialization and after training."""
    import keras

    from bn_keras import diagnostics, models, training

    rows = []
    datasets = training.make_datasets(base, base.batch_size, drop_remainder=False)
    x, y = training.probe_batch(datasets["validation"], base.batch_size)
    for a in arms:
        config = a.config(base, 0, "")
        keras.utils.set_random_seed(0)
        probes = {"init": models.build_model(config.model, config.bn, **config.model_options(1)),
                  "trained": keras.models.load_model(
                      os.path.join(runs_dir, f"{a.name}_seed0", "final.keras"))}
        for when, model in probes.items():
            for layer, norm in diagnostics.gradient_norms(model, x, y).items():
                rows.append({"arm": a.name, "when": when, "layer": layer, "grad_norm": norm})
    return rows


def plot_gradient_norms(rows, path):
    from bn_keras import study as st

    fig, ax = st.axes()
    for (arm_name, when), style in zip(sorted({(r["arm"], r["when"]) for r in rows}),
                                       ("o-", "o--", "s-", "s--")):
        points = [r for r in rows if r["arm"] == arm_name and r["when"] == when
                  and "conv" in r["layer"]]
        ax.plot(range(len(points)), [p["grad_norm"] for p in points], style,
                label=f"{arm_name}, {when}")
    ax.set_yscale("log")
    st.save_figure(fig, ax, path, "Per-layer gradient norms, ResNet-20",
             "conv layer (input -> output)", "||dL/dW||")


def plot_gradient_norms_during_training(runs_dir, grad_rows, path):
    """Gradient norms of the first, middle and last conv layer over training (seed 0)."""
    from bn_keras import diagnostics
    from bn_keras import study as st

    fig, ax = st.axes()
    for arm_name, style in zip(dict.fromkeys(r["arm"] for r in grad_rows), ("-", "--")):
        convs = [r["layer"] for r in grad_rows
                 if r["arm"] == arm_name and r["when"] == "init" and "conv" in r["layer"]]
        series = diagnostics.read_scalars(
            os.path.join(runs_dir, f"{arm_name}_seed0", "tensorboard", "bn_diagnostics"),
            "grad_norm/")
        for layer, color in zip((convs[0], convs[len(convs) // 2], convs[-1]), ("C0", "C1", "C2")):
            steps, norms = zip(*series[layer])
            bad = [step for step, norm in series[layer] if not math.isfinite(norm)]
            note = f" (NaN from step {bad[0]})" if bad else ""
            ax.plot(steps, norms, style, marker="o", markersize=3, color=color,
                    label=f"{arm_name}: {layer}{note}")
    ax.set_yscale("log")
    st.save_figure(fig, ax, path, "Gradient norms during training, ResNet-20 (seed 0)",
                   "training step", "||dL/dW|| on a fixed batch")


def run(study: str, quick: bool, seeds: int, data_dir, output_dir: str, runs_dir: str) -> dict:
    from bn_keras import study as st
    from bn_keras import tables, training

    base, arms, loss_every = plan(study, quick, data_dir)
    # One tf.function call per loss window: the same training as one step per call
    # (tests/test_study.py), without Python's per-step overhead, which dominates LeNet at
    # batch 10.
    base = _replace(base, steps_per_execution=loss_every)
    mode = "quick" if quick else "full"
    study_runs = os.path.join(runs_dir, f"{study}_{mode}")
    start = time.perf_counter()
    results = st.run_study(arms, range(seeds), base, study_runs, loss_every=loss_every)
    rows = st.summarize(results)
    os.makedirs(output_dir, exist_ok=True)
    stem = f"study_{study}" + ("_quick" if quick else "")
    command = "python experiments/compare_bn.py " + " ".join(sys.argv[1:])
    extra, plots = "", []
    epoch_rows = []
    if study in ("compare", "placement", "momentum", "depth"):
        title = "LeNet, Adam 1e-4, batch 10" if study == "compare" else study
        plots.append(st.plot_loss_curves(results, os.path.join(output_dir, f"{stem}_loss.png"),
                                         f"{title} ({mode})"))
        epoch_rows = st.per_epoch_rows(results)
    if study == "compare":
        from bn_keras import models

        extra += (f"\nParameters in the forward graph: no BN "
                  f"{models.lenet_cifar('none').count_params():,}; tutorial as written "
                  f"{models.lenet_tutorial('keras').count_params():,}; with BN wired in "
                  f"{models.lenet_cifar('custom').count_params():,}.\n")
        groups = st.by_arm(results)
        for r in rows:
            for epoch in (5, 10):
                if all(len(x["test_accuracy_per_epoch"]) >= epoch for x in groups[r["arm"]]):
                    r[f"test_acc_epoch_{epoch}"] = epoch_rows[epoch - 1][f"{r['arm']} test acc"]
        if seeds > 1:
            extra += "".join(agreement_text(results, *pair) for pair in (
                ("keras_bn", "our_bn"), ("no_bn", "tutorial_as_written")))
    if epoch_rows:
        extra += ("\nPer epoch (mean ± std over seeds): test accuracy after the epoch, mean "
                  "training loss during it.\n\n"
                  + tables.markdown_table(epoch_rows, list(epoch_rows[0])))
    if study in ("lr", "batch"):
        key = "learning_rate" if study == "lr" else "batch_size"
        plots.append(st.plot_metric_vs(results, key, os.path.join(output_dir, f"{stem}.png"),
                                       f"Test accuracy vs {key} ({mode})"))
    if study == "momentum":
        test = training.make_datasets(base, 500, drop_remainder=False)["test"]
        for r in rows:
            accs = [batch_statistics_accuracy(os.path.join(study_runs, f"{r['arm']}_seed{s}",
                                                           "final.keras"), test)
                    for s in range(seeds)]
            r["test_acc_batch_stats"] = st.mean_std(accs)
    if study == "depth":
        grad_rows = gradient_norm_rows(study_runs, base, arms)
        plot_path = os.path.join(output_dir, f"{stem}_grad_norms.png")
        plot_gradient_norms(grad_rows, plot_path)
        plots.append(plot_path)
        plot_path = os.path.join(output_dir, f"{stem}_grad_norms_training.png")
        plot_gradient_norms_during_training(study_runs, grad_rows, plot_path)
        plots.append(plot_path)
        extra += "\n" + tables.markdown_table(grad_rows, ["arm", "when", "layer", "grad_norm"])
    wall = time.perf_counter() - start
    columns = list(dict.fromkeys(k for r in rows for k in r))
    preamble = (f"# BN study: {study} ({mode} mode)\n\nCommand: `{command}`\n\n"
                f"Base settings: model={base.model}, optimizer={base.optimizer}, "
                f"learning_rate={base.learning_rate}, batch_size={base.batch_size}, "
                f"epochs={base.epochs}, training examples="
                f"{base.train_examples or 45000}, seeds={seeds}; real CIFAR-10, test split "
                f"for the accuracies. Wall time of this invocation: {wall:.0f} s "
                f"(cached runs are not re-trained); training and evaluation time summed over "
                f"the {len(results)} runs: {sum(r['wall_seconds'] for r in results):.0f} s.\n\n")
    body = "".join(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in plots)
    md, csv_path = tables.write_table(rows, columns, output_dir, stem, preamble)
    with open(md, "a") as f:
        f.write(extra + body)
    print(tables.markdown_table(rows, columns))
    print(f"wrote {md} ({wall:.0f} s); TensorBoard: tensorboard --logdir={study_runs}")
    return {"rows": rows, "results": results, "report": md, "wall_seconds": wall}


def main(argv):
    del argv
    run(FLAGS.study, FLAGS.quick, FLAGS.seeds, FLAGS.data_dir, FLAGS.output_dir, FLAGS.runs_dir)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
