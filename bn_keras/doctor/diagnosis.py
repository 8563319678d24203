"""`diagnose_batch_norm`: every BN problem of a model the doctor can find, as a typed
report; `repair_batch_norm`: what of it can be repaired without a code change.

The checks (findings by `check` name; thresholds and their sources in
bn_keras.doctor.thresholds):

- from the model alone (bn_keras.doctor.structure, bn_keras.doctor.weights):
  `never_called`, `output_unused` (the layer has no effect), `axis_mismatch`,
  `bias_before_bn`, `frozen`, `statistics_never_updated`, `initial_statistics`,
  `non_finite_statistics`, `negative_variance`, `non_finite_weights`,
  `collapsed_channels`, `gamma_near_zero`, `untrained`; with the training batch size,
  `small_batch`;
- with labelled data (bn_keras.doctor.measurement): `stale_statistics` (the moving
  statistics against statistics re-estimated for the weights, in accuracy),
  `batch_dependence` (training mode against inference mode, once the statistics are
  right), `re_estimation_worse`, and `data_mismatch` (the data does not look like what
  the model was trained on: then no cost is read from it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import keras

from bn_keras.doctor import measurement as measuring
from bn_keras.doctor import structure, thresholds, weights
from bn_keras.doctor.findings import (
    Diagnosis,
    Finding,
    Measurement,
    Repair,
    Severity,
    ordered,
)
from bn_keras.errors import InvalidSetting
from bn_keras.layers.batch_normalization import batch_norm_layers

# Data checks by default: 20 batches to measure on, 20 to re-estimate from.
MAX_BATCHES = 20
_DATA_CHECKS = ("stale_statistics", "batch_dependence", "data_mismatch")


def diagnose_batch_norm(model: keras.Model, data=None, *, calibration_data=None,
                        batch_size: int | None = None, replicas: int = 1,
                        updates: int | None = None, max_batches: int = MAX_BATCHES,
                        data_batch_size: int = 128) -> Diagnosis:
    """Finds what is wrong with the BN layers of `model` (ours or Keras', any backend);
    returns a Diagnosis, one Finding per problem, errors first. The model is unchanged.

    `data`: labelled examples preprocessed as in training, without augmentation, to
    measure on (what `fit` takes: a tf.data.Dataset or iterable of `(x, y)` batches, or
    arrays `(x, y)` cut into batches of `data_batch_size`); without it, the checks that
    need data are skipped and named in `skipped`. `calibration_data`: what to re-estimate
    the statistics from (training images; default: `data`), in batches of the training
    batch size. Each is read for at most `max_batches` batches.
    `batch_size` (per replica) and `replicas`: how the model was trained, for the
    small-batch check. `updates`: how many training steps updated the statistics (default:
    the compiled model's optimizer's iterations, where it has any).
    """
    start = time.perf_counter()
    layers = batch_norm_layers(model)
    names = structure.layer_names(model, layers)
    updates, source = _updates(model, updates)
    if not layers:
        return Diagnosis(model.name, keras.config.backend(), (), (), {}, None, updates,
                         source, time.perf_counter() - start)
    evaluation = (None if data is None else
                  measuring.take_batches(data, max_batches, data_batch_size))
    x = structure.sample_input(model, evaluation[0][0] if evaluation else None)
    effects = None if x is None else _effects(model, layers, x, evaluation is not None)
    findings, skipped = structure.check_reach(model, layers, names, effects)
    axes, axis_skipped = structure.check_axes(layers, names)
    findings += axes
    skipped.update(axis_skipped)
    findings += structure.check_bias(layers, names)
    findings += structure.check_frozen(layers, names)
    findings += weights.check_statistics(layers, names, updates, source)
    if batch_size is None:
        skipped["small_batch"] = "the training batch size is unknown (pass `batch_size`)"
    else:
        findings += weights.check_batch(layers, names, batch_size, replicas)
    if updates is None:
        skipped["initial_statistics"] = (
            "the number of statistics updates is unknown (no compiled optimizer; pass "
            "`updates`)")
    result = None
    idle = [layer for layer in layers if not layer.built
            or (effects is not None and effects.calls[id(layer)] == 0)]
    active = [layer for layer in layers if layer not in idle]
    if evaluation is None:
        for check in _DATA_CHECKS:
            skipped[check] = "no data given"
    elif not active:
        for check in _DATA_CHECKS:
            skipped[check] = "no BN layer takes part in the forward pass"
    else:
        calibration = (evaluation if calibration_data is None else
                       measuring.take_batches(calibration_data, max_batches, batch_size or 128))
        result = measuring.measure(model, active, names, evaluation, calibration, idle)
        findings = _with_data(findings, result, active, names, effects, skipped)
    return Diagnosis(model.name, keras.config.backend(), tuple(names[id(layer)] for layer in
                                                               layers),
                     ordered(findings), skipped, result, updates, source,
                     time.perf_counter() - start)


def _effects(model, layers, x, from_data: bool) -> structure.Effects:
    try:
        return structure.effects(model, layers, x)
    except (ValueError, TypeError) as e:
        if not from_data:
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])
        raise InvalidSetting("`data` does not fit the model's input: "
                             + " ".join(line.strip() for line in reason[:3])[:300]) from None


def _updates(model, updates: int | None) -> tuple[int | None, str | None]:
    if updates is not None:
        return updates, "as given"
    steps = weights.optimizer_updates(model)
    if steps is None:
        return None, None
    return steps, "the optimizer's iterations"


def first_trained_layer(layers: Sequence, names: dict[int, str], effects, findings
                        ) -> keras.layers.Layer | None:
    """The first BN layer the forward pass calls, if its moving statistics were trained
    (updated, finite, not mostly initial): the one the data guard compares against."""
    if effects is None or not effects.order:
        return None
    first = effects.order[0]
    doubtful = {name for f in findings if f.check in (
        "statistics_never_updated", "non_finite_statistics", "negative_variance")
        or (f.check == "initial_statistics" and f.severity == Severity.WARNING)
        for name in f.layers}
    return None if names[id(first)] in doubtful or first not in layers else first


def _with_data(findings: list[Finding], result: Measurement, active, names, effects,
               skipped: dict[str, str]) -> list[Finding]:
    """The data checks' findings, and the static ones refined by what the data showed."""
    guard = first_trained_layer(active, names, effects, findings)
    if guard is not None:
        stats = next(s for s in result.layers if s.layer == names[id(guard)])
        mismatch = _mismatch(stats)
        if mismatch:
            skipped["stale_statistics"] = skipped["batch_dependence"] = (
                "the data does not look like the model's training data (data_mismatch)")
            return findings + [Finding(
                "data_mismatch", Severity.WARNING, (stats.layer,),
                "the data does not look like what the model was trained on",
                f"at the first BN layer, whose input is a linear function of the model's "
                f"input, {mismatch}; thresholds {thresholds.DATA_MISMATCH_VARIANCE_RATIO:g}x "
                f"and {thresholds.DATA_MISMATCH_SHIFT:g} standard deviations. No cost is "
                "read from this data.",
                "give data preprocessed exactly as in training (scaling, mean and std per "
                "channel, channel order); if it is, the model is served data it never saw",
                numbers={"variance_ratio": stats.variance_ratio,
                         "mean_shift": stats.mean_shift})]
    else:
        skipped["data_mismatch"] = ("the first BN layer's statistics are not trained "
                                    "(or unknown): the data cannot be checked against them")
    gain, error = result.accuracy_gain, result.gain_standard_error
    if gain is None:
        skipped["stale_statistics"] = skipped["batch_dependence"] = (
            "the data has no class labels: no accuracy to measure")
        return findings
    scores = _scores_text(result)
    findings = [_refined(f, gain, error, scores) for f in findings]
    never = any(f.check == "statistics_never_updated" for f in findings)
    # Non-finite or negative statistics carry the cost themselves (_refined).
    broken = any(f.check in ("non_finite_statistics", "negative_variance") for f in findings)
    significant = abs(gain) >= thresholds.MEASUREMENT_Z * error
    if gain > 0 and significant and not never and not broken:
        findings.append(_stale(result, gain, error, scores, names))
    elif gain < 0 and significant and -gain >= thresholds.COST_WARNING and not never:
        findings.append(Finding(
            "re_estimation_worse", Severity.WARNING, (),
            "statistics re-estimated on the calibration data score worse than the moving ones",
            scores + ".",
            "re-estimate from unaugmented training images preprocessed as in training; if "
            "that is what was given, keep the moving statistics",
            cost=f"{-gain * 100:+.1f} points if re-estimated", numbers={"gain": gain}))
    gap, gap_error = result.mode_gap, result.mode_gap_standard_error
    if gap is not None and gap >= thresholds.COST_WARNING and gap >= (
            thresholds.MEASUREMENT_Z * gap_error) and not never:
        findings.append(Finding(
            "batch_dependence", _severity(gap), (),
            "predictions depend on the batch: training mode scores better even than "
            "re-estimated statistics",
            scores + ". The weights work with each batch's own statistics, not with any "
            "fixed ones.",
            "more examples per batch in training, or a batch-independent normalization; "
            "keep evaluation batches like the training ones meanwhile",
            cost=f"{gap * 100:.1f} points of accuracy in inference mode",
            numbers={"mode_gap": gap}))
    return findings


def _mismatch(stats) -> str | None:
    ratio, shift = stats.variance_ratio, stats.mean_shift
    if ratio is None or shift is None:
        return None
    limit = thresholds.DATA_MISMATCH_VARIANCE_RATIO
    if ratio > limit or ratio < 1 / limit or shift > thresholds.DATA_MISMATCH_SHIFT:
        return (f"the data's variance is {ratio:.3g}x the trained moving variance and its "
                f"mean {shift:.3g} standard deviations away (medians over channels)")
    return None


def _severity(cost: float) -> Severity:
    if cost >= thresholds.COST_ERROR:
        return Severity.ERROR
    return Severity.WARNING if cost >= thresholds.COST_WARNING else Severity.INFO


def _scores_text(result: Measurement) -> str:
    def score(s):
        return f"{s.accuracy:.4f} (loss {s.loss:.3g})"

    return (f"accuracy on {result.moving.examples:,} examples: with the moving statistics "
            f"{score(result.moving)}, with statistics re-estimated on "
            f"{result.calibration_examples:,} examples {score(result.re_estimated)}, in "
            f"training mode (each batch's statistics) {score(result.batch)}")


def _stale(result: Measurement, gain: float, error: float, scores: str, names) -> Finding:
    noted = sorted((s for s in result.layers if s.error is None
                    or s.error >= thresholds.LAYER_ERROR_NOTED),
                   key=lambda s: -(s.error if s.error is not None else float("inf")))
    listed = "; ".join(
        f"{s.layer} {'non-finite' if s.error is None else f'{s.error:.2f}'} sd"
        + ("" if s.variance_ratio is None else f" (variance x{s.variance_ratio:.2g})")
        for s in noted[:thresholds.LAYERS_LISTED])
    more = len(noted) - thresholds.LAYERS_LISTED
    severity = _severity(gain)
    problem = ("stale statistics: the moving statistics do not fit the weights"
               if severity != Severity.INFO else
               "slightly stale statistics (within seed noise)")
    return Finding(
        "stale_statistics", severity, tuple(s.layer for s in noted),
        problem,
        f"{scores}: {gain * 100:+.1f} points re-estimated (standard error "
        f"{error * 100:.1f}). Error of the moving statistics in the layer's output: "
        + (listed + (f"; and {more} more" if more > 0 else "") if listed else
           f"every layer below {thresholds.LAYER_ERROR_NOTED} sd") + ".",
        "re-estimate the statistics for the final weights (recalibrate_batch_norm with "
        "training images; --fix); for averaged weights (EMA, SWA) after averaging; in new "
        "runs, a lower momentum after a large learning rate or a short run",
        cost=f"{gain * 100:.1f} points of accuracy", fixable=True,
        numbers={"gain": gain, "standard_error": error})


def _refined(finding: Finding, gain: float, error: float, scores: str) -> Finding:
    """A static finding with what the data says about it."""
    if finding.check == "statistics_never_updated":
        if gain >= thresholds.MEASUREMENT_Z * error and gain > 0:
            return dataclasses.replace(
                finding, evidence=finding.evidence + f" Re-estimating them helps: {scores}.",
                cost=f"{gain * 100:.1f} points of accuracy", fixable=True,
                fix="re-estimate the statistics (recalibrate_batch_norm; --fix): the layers "
                "normalized with batch statistics in training but their updates were "
                "dropped; and keep the updates in the training step")
        return dataclasses.replace(
            finding, evidence=finding.evidence + f" Re-estimating them does not help: "
            f"{scores}: the weights were trained with BN in inference mode, normalizing by "
            "mean 0 and variance 1, i.e. BN never normalized.",
            fix="pass training=True to the model in the training step (or use fit) and train "
            "again; re-estimating the statistics breaks these weights",
            fixable=False)
    costly = gain >= thresholds.COST_WARNING and gain >= thresholds.MEASUREMENT_Z * error
    if finding.check == "initial_statistics" and not costly:
        return dataclasses.replace(
            finding, severity=Severity.INFO, evidence=finding.evidence + " The data checks "
            "measured no cost: statistics re-estimated for the weights score the same.")
    if finding.check in ("initial_statistics", "non_finite_statistics",
                         "negative_variance") and gain > 0:
        return dataclasses.replace(finding, cost=f"{gain * 100:.1f} points of accuracy")
    return finding


def repair_batch_norm(model: keras.Model, data, calibration_data=None, *,
                      max_batches: int = MAX_BATCHES, data_batch_size: int = 128,
                      batch_size: int | None = None) -> Repair:
    """Repairs what needs no code change: re-estimates the BN statistics for the model's
    weights on `calibration_data` (default: `data`) and keeps them if they score a lower
    loss on `data` than the moving ones (or the moving ones are not finite). Changes
    `model` in place; returns what it did and the scores before and after.

    Problems that need a change of code or of training (a layer never called, the wrong
    axis, a batch too small, BN that ran in inference mode in training) stay: the
    Diagnosis says what to change.
    """
    layers = batch_norm_layers(model)
    names = structure.layer_names(model, layers)
    evaluation = measuring.take_batches(data, max_batches, data_batch_size)
    x = structure.sample_input(model, evaluation[0][0])
    effects = structure.effects(model, layers, x) if layers else None
    active = [layer for layer in layers if layer.built and layer.trainable
              and effects.calls[id(layer)]]
    if not active:
        score = measuring.score(model, evaluation)
        return Repair(False, "no trainable BN layer takes part in the forward pass", score,
                      score, 0, 0)
    calibration = (evaluation if calibration_data is None else
                   measuring.take_batches(calibration_data, max_batches, batch_size or 128))
    idle = [layer for layer in layers if layer not in active]

    def better(m: Measurement) -> bool:
        moving, re = m.moving.loss, m.re_estimated.loss
        return re == re and (not moving == moving or re < moving or moving == float("inf"))

    result = measuring.measure(model, active, names, evaluation, calibration, idle, keep=better)
    applied = better(result)
    reason = ("re-estimated statistics: loss {:.4g} -> {:.4g}" if applied else
              "kept the moving statistics: re-estimated ones score no better (loss {:.4g} "
              "vs {:.4g})").format(result.moving.loss, result.re_estimated.loss)
    return Repair(applied, reason, result.moving,
                  result.re_estimated if applied else result.moving,
                  result.calibration_batches, result.calibration_examples)
