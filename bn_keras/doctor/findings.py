"""What the BN doctor reports: `Finding`s, the `Measurement` behind the data checks, and
the `Diagnosis` that holds them (written as JSON by `to_json`, read back by `from_json`)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Severity(enum.StrEnum):
    """How bad a finding is: an `error` costs accuracy beyond seed noise or leaves a layer
    doing nothing or the wrong thing; a `warning` may cost and deserves a look; `info` is
    worth knowing and costs nothing measurable."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# Severity order for sorting: errors first.
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem the doctor found: which check, how bad, which BN layers, what is wrong,
    the evidence (with `numbers` for programs), what it costs where measurable, and the fix.

    `fixable`: True when `repair_batch_norm` (`experiments/diagnose_bn.py --fix`) repairs it
    without a code change (by re-estimating the statistics); False when the fix is a change
    of code or training, said in `fix`.
    """

    check: str
    severity: Severity
    layers: tuple[str, ...]
    problem: str
    evidence: str
    fix: str
    cost: str | None = None
    fixable: bool = False
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        """The finding in one line: severity, layers, problem."""
        where = ", ".join(self.layers) if self.layers else "model"
        return f"{self.severity}: {where}: {self.problem}"

    def to_json(self) -> dict[str, Any]:
        value = dataclasses.asdict(self)
        value["severity"] = str(self.severity)
        value["layers"] = list(self.layers)
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Finding:
        return cls(**{**value, "severity": Severity(value["severity"]),
                      "layers": tuple(value["layers"])})


@dataclasses.dataclass(frozen=True)
class Score:
    """Mean loss and accuracy (None where the labels are not class indices) on `examples`."""

    loss: float
    accuracy: float | None
    examples: int


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """How far one BN layer's moving statistics are from those its input has on the data
    (re-estimated for the current weights, all layers together).

    `error`: the root mean square, over channels, of the error the moving statistics put
    into the layer's normalized output, in units of its standard deviation: with
    s = sqrt((v_data + eps) / (v_moving + eps)) and d = (m_data - m_moving) /
    sqrt(v_moving + eps), a channel's output is s * z + d instead of z, an error of
    sqrt((s - 1)^2 + d^2). `variance_ratio` and `mean_shift`: the medians over channels of
    v_data / v_moving and |d|.
    """

    layer: str
    error: float | None  # None: not finite (non-finite moving statistics)
    variance_ratio: float | None
    mean_shift: float | None


@dataclasses.dataclass(frozen=True)
class Measurement:
    """The data checks' numbers: the model scored with its moving statistics (inference
    mode), with each batch's own statistics (training mode), and with statistics
    re-estimated on the calibration data (inference mode); per BN layer, how far the moving
    statistics are from the re-estimated ones.

    `changed_predictions`: evaluation examples that the moving and the re-estimated
    statistics classify differently (one right, the other wrong): the accuracy difference's
    standard error is about sqrt(changed_predictions) / examples;
    `batch_changed_predictions` the same for training mode and re-estimated statistics.
    """

    moving: Score
    batch: Score
    re_estimated: Score
    calibration_batches: int
    calibration_examples: int
    evaluation_batches: int
    layers: tuple[LayerStatistics, ...]
    changed_predictions: int
    batch_changed_predictions: int
    seconds: float

    @property
    def accuracy_gain(self) -> float | None:
        """Accuracy with re-estimated statistics minus with the moving ones."""
        if self.moving.accuracy is None or self.re_estimated.accuracy is None:
            return None
        return self.re_estimated.accuracy - self.moving.accuracy

    @property
    def gain_standard_error(self) -> float:
        """The sampling error of `accuracy_gain`: paired, from the changed predictions."""
        return self.changed_predictions ** 0.5 / max(self.moving.examples, 1)

    @property
    def mode_gap(self) -> float | None:
        """Accuracy in training mode (each batch's statistics) minus with re-estimated
        statistics: what the predictions owe to the batch they are in."""
        if self.batch.accuracy is None or self.re_estimated.accuracy is None:
            return None
        return self.batch.accuracy - self.re_estimated.accuracy

    @property
    def mode_gap_standard_error(self) -> float:
        return self.batch_changed_predictions ** 0.5 / max(self.batch.examples, 1)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Measurement:
        fields = dict(value)
        for name in ("moving", "batch", "re_estimated"):
            fields[name] = Score(**fields[name])
        fields["layers"] = tuple(LayerStatistics(**layer) for layer in fields["layers"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The doctor's report on one model: its BN layers, the findings (errors first), the
    checks it could not run and why, and the data checks' measurement (None without data).

    `updates`: how many times the moving statistics were updated, where known, and
    `updates_source` how that was learned (the optimizer's iterations, or the caller).
    """

    model: str
    backend: str
    bn_layers: tuple[str, ...]
    findings: tuple[Finding, ...]
    skipped: dict[str, str]
    measurement: Measurement | None = None
    updates: int | None = None
    updates_source: str | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> tuple[Finding, ...]:
        return self.with_severity(Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return self.with_severity(Severity.WARNING)

    @property
    def healthy(self) -> bool:
        """No error (warnings and infos allowed): what a CI guard asks."""
        return not self.errors

    def with_severity(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == severity)

    def find(self, check: str) -> Finding | None:
        """The finding of `check`, or None."""
        return next((f for f in self.findings if f.check == check), None)

    def summary(self) -> str:
        """One line: the verdict, the counts, and the worst finding."""
        if not self.bn_layers:
            return f"{self.model}: no BN layers."
        if not self.findings:
            return f"{self.model}: BN healthy ({len(self.bn_layers)} BN layers, no findings)."
        counts = ", ".join(_count(len(self.with_severity(s)), str(s)) for s in Severity
                           if self.with_severity(s))
        verdict = "BN healthy" if self.healthy else "BN broken"
        return f"{self.model}: {verdict} ({counts}). {self.findings[0].line()}"

    def rows(self) -> list[dict[str, Any]]:
        """One row per finding, for a table: severity, layers, problem, evidence, cost, fix."""
        return [{"severity": str(f.severity), "layers": ", ".join(f.layers) or "model",
                 "check": f.check, "problem": f.problem, "evidence": f.evidence,
                 "cost": f.cost or "-",
                 "fix": ("[--fix] " if f.fixable else "") + f.fix} for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        value = dataclasses.asdict(self)
        value["findings"] = [f.to_json() for f in self.findings]
        value["bn_layers"] = list(self.bn_layers)
        value["measurement"] = self.measurement and self.measurement.to_json()
        value["healthy"] = self.healthy
        value["summary"] = self.summary()
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Diagnosis:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k in known}
        fields["bn_layers"] = tuple(fields["bn_layers"])
        fields["findings"] = tuple(Finding.from_json(f) for f in fields["findings"])
        if fields.get("measurement") is not None:
            fields["measurement"] = Measurement.from_json(fields["measurement"])
        return cls(**fields)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 and what != "info" else "")


def ordered(findings: list[Finding]) -> tuple[Finding, ...]:
    """Errors first, then warnings, then infos; the order of the checks within each."""
    return tuple(sorted(findings, key=lambda f: _RANK[f.severity]))


@dataclasses.dataclass(frozen=True)
class Repair:
    """What `repair_batch_norm` did: whether it kept re-estimated statistics (`applied`),
    why, and the scores before and after on the evaluation data."""

    applied: bool
    reason: str
    before: Score
    after: Score
    calibration_batches: int
    calibration_examples: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
