"""The doctor's checks of what BN layers hold: statistics never updated or still mostly
their initial values, non-finite or negative statistics, collapsed channels, gamma near
zero, and the batch size they were trained at. NumPy on the weights' values: the same on
every backend.

How many updates the moving statistics had is not stored anywhere: the caller may say it
(`updates`: a training run's steps), else a compiled model's optimizer says how many
steps it applied (`model.optimizer.iterations`, kept in .keras files), one update of
every trainable BN layer per step. Without either, the checks that need it say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from bn_keras.doctor import thresholds
from bn_keras.doctor.findings import Finding, Severity

_RETRAIN = "train again"


def values(layer) -> dict[str, np.ndarray | None]:
    """A BN layer's gamma, beta, moving mean and moving variance as float64 arrays (None
    where the layer has none, or is not built)."""
    found = {}
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        variable = getattr(layer, name, None)
        found[name] = (None if variable is None
                       else keras.ops.convert_to_numpy(variable).astype(np.float64))
    return found


def _constant(initializer) -> float | None:
    """The value a constant initializer (zeros, ones, Constant) fills with, else None."""
    initializer = keras.initializers.get(initializer)
    if isinstance(initializer, keras.initializers.Zeros):
        return 0.0
    if isinstance(initializer, keras.initializers.Ones):
        return 1.0
    if isinstance(initializer, keras.initializers.Constant):
        return float(initializer.get_config()["value"])
    return None


def at_initial_values(layer, name: str) -> bool:
    """Whether the layer's weight `name` still holds exactly its (constant) initial value."""
    value = values(layer)[name]
    initial = _constant(getattr(layer, f"{name}_initializer", None))
    return value is not None and initial is not None and bool(np.all(value == initial))


def optimizer_updates(model: keras.Model) -> int | None:
    """The training steps a compiled model's optimizer applied; None if it has none, or
    none that stepped (a model compiled again after training, or a copy, starts a fresh
    optimizer at 0: that says nothing of the statistics)."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return None
    return int(keras.ops.convert_to_numpy(iterations)) or None


def training_evidence(layers: Sequence[keras.layers.Layer], updates: int | None) -> str | None:
    """Why the model counts as trained (the optimizer's steps, or BN weights that moved
    from their initial values), or None."""
    if updates:
        return f"{updates:,} training steps"
    moved = [layer.name for layer in layers if layer.built and any(
        values(layer)[w] is not None and not at_initial_values(layer, w)
        for w in ("gamma", "beta"))]
    if moved:
        return f"gamma/beta of {len(moved)} BN layers moved from their initial values"
    return None


def _names(layers, names) -> tuple[str, ...]:
    return tuple(names[id(layer)] for layer in layers)


def check_statistics(layers: Sequence[keras.layers.Layer], names: dict[int, str],
                     updates: int | None, updates_source: str | None) -> list[Finding]:
    """Statistics never updated, mostly initial, non-finite or negative; non-finite
    gamma/beta; collapsed channels; gamma near zero."""
    built = [layer for layer in layers if layer.built]
    trained = training_evidence(built, updates)
    findings = []
    never = [layer for layer in built if at_initial_values(layer, "moving_mean")
             and at_initial_values(layer, "moving_variance")]
    if never and trained:
        findings.append(_never_updated(never, names, trained, len(built)))
    elif never and len(never) == len(built):
        return [Finding(
            "untrained", Severity.INFO, (),
            "the model looks untrained: every BN layer holds its initial statistics",
            "moving mean 0 and variance 1 everywhere, gamma/beta at their initial values, "
            "no optimizer steps known.",
            "nothing to fix before training; the statistics checks mean something after it")]
    findings += _non_finite(built, names)
    updated = [layer for layer in built if layer not in never]
    if updates is not None:
        findings += _initial_dominated(updated, names, updates, updates_source)
    for layer in built:
        findings += _collapsed(layer, names)
        if trained:
            findings += _gamma_off(layer, names)
    return findings


def _never_updated(never, names, trained: str, total: int) -> Finding:
    return Finding(
        "statistics_never_updated", Severity.ERROR, _names(never, names),
        "moving statistics never updated: still mean 0 and variance 1",
        f"{len(never)} of {total} BN layers hold exactly their initial moving mean and "
        f"variance while the model trained ({trained}): no training step ran them in "
        "training mode, or the updates were dropped.",
        "pass training=True when calling the model in a custom training step (or use "
        "fit); on JAX, keep the non_trainable_variables that stateless_call returns. Then "
        "either train again, or re-estimate the statistics (recalibrate_batch_norm) if the "
        "layers did normalize with batch statistics in training (the data checks tell)",
        numbers={"layers": len(never)})


def _non_finite(layers, names) -> list[Finding]:
    findings = []
    statistics, weights, negative = {}, {}, {}
    for layer in layers:
        v = values(layer)
        bad = [int(np.sum(~np.isfinite(v[w]))) for w in ("moving_mean", "moving_variance")]
        if sum(bad):
            statistics[layer] = (bad, v["moving_variance"].size)
        bad_weights = sum(int(np.sum(~np.isfinite(v[w]))) for w in ("gamma", "beta")
                          if v[w] is not None)
        if bad_weights:
            weights[layer] = bad_weights
        finite = v["moving_variance"][np.isfinite(v["moving_variance"])]
        if np.any(finite < 0):
            negative[layer] = (int(np.sum(finite < 0)), float(finite.min()))
    if statistics:
        detail = "; ".join(f"{names[id(layer)]}: {m} means and {s} variances of {c} non-finite"
                           for layer, ((m, s), c) in statistics.items())
        findings.append(Finding(
            "non_finite_statistics", Severity.ERROR, _names(statistics, names),
            "NaN or infinite moving statistics: inference outputs NaN",
            f"{detail}. One overflowing batch is enough: its statistics enter the moving "
            "average and stay (mixed precision: float16 overflows above 65,504; "
            "pytorch/pytorch#88474).",
            "re-estimate the statistics (recalibrate_batch_norm; --fix) if the weights are "
            "finite; then find the overflow (lower learning rate, loss scaling, float32 BN)",
            fixable=True, numbers={names[id(layer)]: {"mean": m, "variance": s}
                                   for layer, ((m, s), _) in statistics.items()}))
    if negative:
        detail = "; ".join(f"{names[id(layer)]}: {n} (min {low:.3g})"
                           for layer, (n, low) in negative.items())
        findings.append(Finding(
            "negative_variance", Severity.ERROR, _names(negative, names),
            "negative moving variance: impossible for a variance",
            f"{detail}. Training never makes one: the statistics were set by hand or "
            "damaged.",
            "re-estimate the statistics (recalibrate_batch_norm; --fix), and check what "
            "wrote them", fixable=True))
    if weights:
        findings.append(Finding(
            "non_finite_weights", Severity.ERROR, _names(weights, names),
            "NaN or infinite gamma/beta: the weights diverged",
            "; ".join(f"{names[id(layer)]}: {n} values" for layer, n in weights.items()) + ".",
            f"{_RETRAIN} with a lower learning rate (or gradient clipping); re-estimating "
            "statistics cannot repair weights"))
    return findings


def _initial_dominated(layers, names, updates: int, source: str | None) -> list[Finding]:
    by_severity: dict[Severity, list] = {}
    for layer in layers:
        if not layer.trainable:
            continue
        left = float(layer.momentum) ** updates
        if left >= thresholds.INITIAL_WEIGHT_WARNING:
            by_severity.setdefault(Severity.WARNING, []).append((layer, left))
        elif left >= thresholds.INITIAL_WEIGHT_INFO:
            by_severity.setdefault(Severity.INFO, []).append((layer, left))
    findings = []
    for severity, found in by_severity.items():
        momenta = sorted({float(layer.momentum) for layer, _ in found})
        worst = max(left for _, left in found)
        findings.append(Finding(
            "initial_statistics", severity, _names([layer for layer, _ in found], names),
            "moving statistics still mostly their initial values (mean 0, variance 1)",
            f"momentum {', '.join(f'{m:g}' for m in momenta)} after {updates:,} updates "
            f"({source or 'as given'}): up to {worst:.3g} of each moving statistic is still "
            f"its initial value (momentum ** updates).",
            "re-estimate the statistics for the final weights (recalibrate_batch_norm; "
            "--fix); in new runs, a lower momentum for short training (0.9) or more steps",
            fixable=True, numbers={"updates": updates, "initial_weight": worst}))
    return findings


def _collapsed(layer, names) -> list[Finding]:
    variance = values(layer)["moving_variance"]
    finite = variance[np.isfinite(variance)]
    if finite.size == 0:
        return []
    median = float(np.median(finite))
    dead = (finite <= 0) | (finite < thresholds.COLLAPSED_VARIANCE * median)
    count = int(np.sum(dead))
    if not count:
        return []
    share = count / finite.size
    severity = Severity.WARNING if share >= thresholds.COLLAPSED_SHARE else Severity.INFO
    return [Finding(
        "collapsed_channels", severity, (names[id(layer)],),
        "collapsed channels: their input barely varies",
        f"{count} of {finite.size} channels have a moving variance below "
        f"{thresholds.COLLAPSED_VARIANCE:g} of the layer's median ({median:.3g}); smallest "
        f"{float(finite.min()):.3g}. BN divides them by sqrt(variance + epsilon), "
        "amplifying what noise they have.",
        "usually dead ReLUs or filters gone to zero before the layer (too high a learning "
        "rate, BN after the ReLU): lower the learning rate, or prune those channels",
        numbers={"channels": count, "of": int(finite.size)})]


def _gamma_off(layer, names) -> list[Finding]:
    gamma = values(layer)["gamma"]
    if gamma is None or not np.all(np.isfinite(gamma)):
        return []
    off = np.abs(gamma) < thresholds.GAMMA_OFF
    count = int(np.sum(off))
    if not count:
        return []
    whole = count == gamma.size
    return [Finding(
        "gamma_near_zero", Severity.WARNING if whole else Severity.INFO, (names[id(layer)],),
        ("gamma near zero in every channel: the layer outputs constants" if whole else
         "gamma near zero: channels switched off"),
        f"{count} of {gamma.size} channels have |gamma| < {thresholds.GAMMA_OFF:g}: their "
        "output is beta alone, whatever the input.",
        "prunable channels (weight decay or L1 on gamma drives them there); if unintended, "
        "lower the weight decay on gamma",
        numbers={"channels": count, "of": int(gamma.size)})]


def effective_batch(layer, batch_size: int, replicas: int) -> int:
    """The examples one BN layer's training statistics were computed over: the ghost group
    (virtual_batch_size), the global batch (synchronized across replicas), or the batch of
    one replica."""
    ghost = getattr(layer, "virtual_batch_size", None)
    if ghost:
        return min(int(ghost), batch_size)
    if getattr(layer, "synchronized", False) and replicas > 1:
        return batch_size * replicas
    return batch_size


def check_batch(layers: Sequence[keras.layers.Layer], names: dict[int, str],
                batch_size: int, replicas: int) -> list[Finding]:
    """BN trained at a batch per BN group too small for it (the BN study's batch arm)."""
    by_size: dict[int, list] = {}
    for layer in layers:
        if layer.trainable:
            by_size.setdefault(effective_batch(layer, batch_size, replicas), []).append(layer)
    findings = []
    for size, found in sorted(by_size.items()):
        if size > thresholds.SMALL_BATCH_WARNING:
            continue
        severity = (Severity.ERROR if size <= thresholds.SMALL_BATCH_ERROR
                    else Severity.WARNING)
        findings.append(Finding(
            "small_batch", severity, _names(found, names),
            f"BN trained on {size} examples per batch: too few for its statistics",
            f"batch_size={batch_size} per replica, {replicas} replica(s): each BN layer's "
            f"training statistics came from {size} examples. In the BN study "
            f"({thresholds.BATCH_STUDY}; LeNet, CIFAR-10) BN at batch 2 scored 0.1797 +- "
            "0.0023 against 0.3255 +- 0.0283 without BN; at batch 8, 0.3710 against 0.3264. "
            f"With the SGD batch fixed at 128 and BN normalizing groups of k "
            f"({thresholds.NORM_BATCH_STUDY}, 10 epochs, statistics re-estimated), groups of "
            "2 scored 0.3542 and of 4 0.5944, against 0.6234 with LayerNorm, 0.6197 with "
            "GroupNorm and 0.6268 without normalization; groups of 8 and more beat them "
            "(0.6385 at 8).",
            "train with more examples per replica (8 and up helped in the study), or "
            "synchronized=True across replicas (the global batch's statistics), or, when "
            "fine-tuning from trained statistics, freeze BN (freeze_batch_norm); or a "
            "batch-independent normalization (GroupNormalization, LayerNormalization). "
            "Batch renorm (0.1804) and re-estimated statistics (0.1910) did not help at 2",
            cost="at batch 2 in the study: 14.6 points of test accuracy against no BN",
            numbers={"examples_per_bn_batch": size, "batch_size": batch_size,
                     "replicas": replicas}))
    return findings
