"""Evidence that our BatchNormalization equals Keras' built-in, case by case.

`compare(case)` builds both layers with the same weights, feeds them the same
batches and returns the largest differences in every quantity a user can
observe: training output, inference output, gradients with respect to the
input, gamma and beta, and the moving statistics after several training steps.
`numpy_batch_norm` is an independent reference of the tutorial's four formulas.

It runs on whichever Keras backend is active, against that backend's built-in.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import keras
import numpy as np

from bn_keras.layers import BatchNormalization
from bn_keras.testing import layer_steps

QUANTITIES = ("train_output", "infer_output", "grad_input", "grad_gamma", "grad_beta",
              "moving_mean", "moving_variance")
# Where ours and Keras' disagree beyond tolerance (ill-conditioned inputs), ours
# must be as close to the float64 result as Keras', up to this rounding-noise factor.
ROUNDING_ALLOWANCE = 2.0
TOLERANCES = {"float32": 1e-5, "mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: input shape, feature axis, data and layer arguments."""

    shape: tuple[int, ...]
    axis: int = -1
    magnitude: float = 1.0  # inputs are offset by this and spread by ~1
    constant: bool = False  # every input equal: zero batch variance
    converged: bool = False  # moving statistics start at the data's (inference at large offsets)
    policy: str = "float32"
    masked: bool = False
    layer_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        parts = [f"{'x'.join(map(str, self.shape))} axis={self.axis}"]
        if self.magnitude != 1.0:
            parts.append(f"offset={self.magnitude:g}")
        if self.constant:
            parts.append("constant")
        if self.converged:
            parts.append("converged")
        if self.policy != "float32":
            parts.append(self.policy)
        if self.masked:
            parts.append("masked")
        parts += [f"{k}={v}" for k, v in self.layer_kwargs]
        return " ".join(parts)

    @property
    def tolerance(self) -> float:
        return TOLERANCES[self.policy]


def default_grid() -> list[Case]:
    """Every configuration the layer is proven on: shapes, axes, batch sizes 1-64, ill-conditioned
    inputs, mixed precision and every layer option."""
    cases = [Case((batch, 120)) for batch in (1, 2, 64)]
    cases += [Case((batch, 126, 64)) for batch in (1, 2, 32)]
    cases += [Case((16, 64, 126), axis=1), Case((16, 126, 64), masked=True)]
    cases += [Case((batch, 28, 28, 6)) for batch in (1, 2, 64)]
    cases += [Case((64, 10, 10, 16)), Case((16, 16, 10, 10), axis=1), Case((2, 16, 10, 10), axis=1)]
    cases += [Case((64, 120), magnitude=1e4), Case((16, 10, 10, 16), magnitude=1e4),
              Case((16, 28, 28, 6), magnitude=1e4)]
    cases += [Case((64, 120), magnitude=1e4, converged=True),
              Case((16, 10, 10, 16), magnitude=1e4, converged=True),
              Case((16, 28, 28, 6), magnitude=1e4, converged=True)]
    cases += [Case((64, 120), constant=True), Case((16, 10, 10, 16), constant=True),
              Case((16, 28, 28, 6), constant=True)]
    cases += [Case((64, 120), policy="mixed_float16"),
              Case((16, 10, 10, 16), policy="mixed_float16"),
              Case((16, 28, 28, 6), policy="mixed_float16"),
              Case((16, 10, 10, 16), policy="mixed_bfloat16")]
    cases += [Case((16, 10, 10, 16), layer_kwargs=(("synchronized", True),))]
    cases += [Case((16, 10, 10, 16), layer_kwargs=(("center", False), ("scale", False))),
              Case((64, 120), layer_kwargs=(("momentum", 0.9), ("epsilon", 1e-5))),
              Case((16, 10, 10, 16), layer_kwargs=(("epsilon", 1e-6),)),
              Case((64, 120), layer_kwargs=(("renorm", True),
                                            ("renorm_clipping", (("rmax", 3.0), ("dmax", 5.0)))))]
    return cases


def _layer_kwargs(case: Case) -> dict[str, Any]:
    kwargs = dict(case.layer_kwargs)
    if "renorm_clipping" in kwargs:
        kwargs["renorm_clipping"] = dict(kwargs["renorm_clipping"])
    return {"axis": case.axis, "dtype": case.policy, **kwargs}


def _builtin_kwargs(case: Case) -> dict[str, Any]:
    """Keras' layer refuses synchronized=True outside TensorFlow; on one device it is the
    same math as synchronized=False, which ours is then compared with."""
    kwargs = _layer_kwargs(case)
    if keras.config.backend() != "tensorflow":
        kwargs.pop("synchronized", None)
    return kwargs


def make_batches(case: Case, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        if case.constant:
            x = np.full(case.shape, rng.normal(), dtype=np.float32) * 3 + case.magnitude
        else:
            # A per-channel offset and spread, so each channel has its own statistics.
            channel_shape = [1] * len(case.shape)
            channel_shape[case.axis] = case.shape[case.axis]
            offset = rng.normal(size=channel_shape) + case.magnitude
            spread = rng.uniform(0.5, 2.0, size=channel_shape)
            x = rng.normal(size=case.shape) * spread + offset
        batches.append(x.astype(np.float32))
    return batches


def make_mask(case: Case) -> np.ndarray | None:
    if not case.masked:
        return None
    mask = np.ones(case.shape[:-1], dtype=bool)
    mask[:, case.shape[1] // 2:] = False  # the second half of every sequence is padding
    return mask


def build_pair(case: Case, seed: int = 0) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """Keras' layer and ours, built for `case` and holding the same random weights."""
    builtin = keras.layers.BatchNormalization(**_builtin_kwargs(case))
    ours = BatchNormalization(**_layer_kwargs(case))
    builtin.build(case.shape)
    ours.build(case.shape)
    rng = np.random.default_rng(seed + 1)
    weights = []
    for w in builtin.get_weights():
        weights.append(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
    if case.converged:  # the moving statistics where training would have taken them
        _, mean, variance = numpy_batch_norm(make_batches(case, 1, seed)[0],
                                             np.ones(1), np.zeros(1), case.axis)
        weights[-2:] = [mean.astype(np.float32), variance.astype(np.float32)]
    builtin.set_weights(weights)
    ours.set_weights(weights)
    return builtin, ours


def _observe(layer, batches, mask, projection, xla=False) -> dict[str, np.ndarray]:
    """Everything observable from a layer over a few training steps (`xla`: every step
    and the inference call compiled by XLA, with the batch size unknown while tracing)."""
    # A fixed random projection makes every output element matter to the loss.
    step = layer_steps.train_step(layer, mask, xla=xla)
    y, grads = step(batches[0], projection)
    for batch in batches[1:]:
        if xla:
            step(batch, projection)
        else:
            layer(batch, training=True, mask=mask)
    infer = (layer_steps.infer_step(layer, mask, xla=True) if xla
             else lambda x: layer(x, training=False, mask=mask))
    observed = {
        "train_output": y,
        "grad_input": grads["input"],
        "grad_gamma": grads.get("gamma"),
        "grad_beta": grads.get("beta"),
        "moving_mean": layer.moving_mean,
        "moving_variance": layer.moving_variance,
        "infer_output": infer(batches[-1]),
    }
    return {k: None if v is None else keras.ops.convert_to_numpy(v).astype(np.float32)
            for k, v in observed.items()}


def scaled_difference(a: np.ndarray, reference: np.ndarray) -> float:
    """max|a - ref| / max(1, max|ref|): absolute for unit-scale values, relative beyond;
    infinite where `a` is NaN or infinite and the reference is not."""
    if not a.size:
        return 0.0
    if np.any(~np.isfinite(a) & np.isfinite(reference)):
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(reference))))
    return float(np.max(np.abs(a.astype(np.float64) - reference))) / scale


def _has_reference(case: Case) -> bool:
    return (case.policy == "float32" and not case.masked
            and not dict(case.layer_kwargs).get("renorm"))


def compare(case: Case, steps: int = 5, seed: int = 0, xla: bool = False) -> dict[str, Any]:
    """Ours vs Keras' layer for `case`, and both vs the float64 NumPy reference. With
    `xla`, ours runs compiled by XLA (batch size unknown while tracing), Keras' as usual.

    For each quantity, `result[q]` is the scaled difference between ours and
    Keras'. Where a float64 reference exists, `result["ours_vs_exact"]` and
    `result["keras_vs_exact"]` hold each layer's worst scaled error against it.
    A quantity passes when ours is within the case's tolerance of Keras', or,
    where they differ by more (ill-conditioned inputs: large offsets, constant
    inputs), when ours' error against the exact value is at most
    ROUNDING_ALLOWANCE times Keras' error.
    """
    with _quiet_retracing():
        return _compare(case, steps, seed, xla)


def xla_column(case: Case, steps: int = 5, seed: int = 0) -> dict[str, Any]:
    """The grid's XLA column for `case`: whether ours, compiled by XLA with the batch size
    unknown, passes against Keras' layer, and its largest scaled difference from it."""
    result = compare(case, steps, seed, xla=True)
    differences = [result[q] for q in QUANTITIES if result[q] is not None]
    return {"xla_passed": result["passed"], "xla_max_diff": max(differences)}


@contextlib.contextmanager
def _quiet_retracing():
    """Each case traces new functions of the same code: TensorFlow's warning that they
    "triggered tf.function retracing" says nothing here."""
    import logging

    class Quiet(logging.Filter):
        def filter(self, record):
            return "triggered tf.function retracing" not in record.getMessage()

    quiet, logger = Quiet(), logging.getLogger("tensorflow")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _compare(case: Case, steps: int, seed: int, xla: bool) -> dict[str, Any]:
    builtin, ours = build_pair(case, seed)
    initial_weights = builtin.get_weights()
    batches = make_batches(case, steps, seed)
    mask = make_mask(case)
    projection = np.random.default_rng(seed + 2).normal(size=case.shape).astype(np.float32)
    expected = _observe(builtin, batches, mask, projection)
    actual = _observe(ours, batches, mask, projection, xla=xla)
    exact = (numpy_training_reference(case, batches, initial_weights, projection)
             if _has_reference(case) else None)
    result: dict[str, Any] = {"case": case.name, "tolerance": case.tolerance}
    passed = config_matches(builtin, ours)
    worst_ours = worst_keras = 0.0
    for quantity in QUANTITIES:
        if expected[quantity] is None:
            result[quantity] = None
            continue
        result[quantity] = scaled_difference(actual[quantity], expected[quantity])
        ok = result[quantity] <= case.tolerance
        if exact is not None:
            ours_error = scaled_difference(actual[quantity], exact[quantity])
            keras_error = scaled_difference(expected[quantity], exact[quantity])
            worst_ours, worst_keras = max(worst_ours, ours_error), max(worst_keras, keras_error)
            ok = ok or (np.isfinite(ours_error)
                        and ours_error <= ROUNDING_ALLOWANCE * keras_error)
        passed = passed and ok
    result["ours_vs_exact"] = worst_ours if exact is not None else None
    result["keras_vs_exact"] = worst_keras if exact is not None else None
    # Inference against float64 from the layer's own (float32) moving statistics: the
    # error the inference formula adds, apart from the statistics' own rounding.
    result["infer_vs_own_statistics"] = None
    if exact is not None:
        gamma, beta = _gamma_beta(case, initial_weights[:-2])
        own = numpy_inference(batches[-1], actual["moving_mean"], actual["moving_variance"],
                              gamma, beta, case.axis, _layer_kwargs(case).get("epsilon", 1e-3))
        result["infer_vs_own_statistics"] = scaled_difference(actual["infer_output"], own)
        passed = passed and result["infer_vs_own_statistics"] <= case.tolerance
    result["config_roundtrip"] = config_matches(builtin, ours)
    result["passed"] = passed
    return result


def config_matches(builtin: keras.layers.Layer, ours: keras.layers.Layer) -> bool:
    """Ours' config holds Keras' config, and from_config(get_config()) rebuilds it."""
    theirs, mine = builtin.get_config(), ours.get_config()
    shared = {k: v for k, v in mine.items() if k in theirs}
    same_keys = set(theirs) <= set(mine)
    rebuilt = type(ours).from_config(mine).get_config() == mine
    ignore = {"name"} if keras.config.backend() == "tensorflow" else {"name", "synchronized"}
    same_values = all(shared[k] == theirs[k] for k in theirs if k not in ignore)
    return same_keys and rebuilt and same_values


def numpy_training_reference(case: Case, batches: list[np.ndarray], weights: list[np.ndarray],
                             projection: np.ndarray) -> dict[str, np.ndarray]:
    """What `_observe` should see, in float64 NumPy from the four formulas and their gradient."""
    kwargs = _layer_kwargs(case)
    epsilon, momentum = kwargs.get("epsilon", 1e-3), kwargs.get("momentum", 0.99)
    weights = [w.astype(np.float64) for w in weights]
    gamma, beta = _gamma_beta(case, weights[:-2])
    channels = case.shape[case.axis]
    moving_mean, moving_variance = weights[-2:]
    axis = case.axis % len(case.shape)
    reduce = tuple(i for i in range(len(case.shape)) if i != axis)
    shape = [1] * len(case.shape)
    shape[axis] = -1
    for i, x in enumerate(batches):
        y, mu, sigma2 = numpy_batch_norm(x, gamma, beta, axis, epsilon)
        if i == 0:
            first = (x.astype(np.float64), y, mu, sigma2)
        moving_mean = momentum * moving_mean + (1 - momentum) * mu
        moving_variance = momentum * moving_variance + (1 - momentum) * sigma2
    x, y, mu, sigma2 = first
    inv_sigma = 1.0 / np.sqrt(sigma2 + epsilon)
    x_hat = (x - mu.reshape(shape)) * inv_sigma.reshape(shape)
    dy = projection.astype(np.float64)
    m = x.size / channels
    d_beta, d_gamma = dy.sum(axis=reduce), (dy * x_hat).sum(axis=reduce)
    d_x = (gamma * inv_sigma / m).reshape(shape) * (
        m * dy - d_beta.reshape(shape) - x_hat * d_gamma.reshape(shape))
    infer = numpy_inference(batches[-1], moving_mean, moving_variance, gamma, beta, axis,
                            epsilon)
    return {"train_output": y, "grad_input": d_x, "grad_gamma": d_gamma, "grad_beta": d_beta,
            "moving_mean": moving_mean, "moving_variance": moving_variance, "infer_output": infer}


def numpy_inference(x, mean, variance, gamma, beta, axis=-1, epsilon=1e-3) -> np.ndarray:
    """Inference-mode BN in float64 NumPy: (x - mean) / sqrt(variance + eps) * gamma + beta."""
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    mean, variance, gamma, beta = (np.asarray(v, np.float64).reshape(shape)
                                   for v in (mean, variance, gamma, beta))
    return (x.astype(np.float64) - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _gamma_beta(case: Case, weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    kwargs = _layer_kwargs(case)
    names = [n for n, on in (("gamma", kwargs.get("scale", True)),
                             ("beta", kwargs.get("center", True))) if on]
    params = dict(zip(names, weights, strict=True))
    channels = case.shape[case.axis]
    return params.get("gamma", np.ones(channels)), params.get("beta", np.zeros(channels))


def numpy_batch_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, axis: int = -1,
                     epsilon: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tutorial's four formulas in float64 NumPy: returns (y, mu, sigma^2)."""
    x = x.astype(np.float64)
    axis = axis % x.ndim
    reduce = tuple(i for i in range(x.ndim) if i != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    mu = x.mean(axis=reduce)
    sigma2 = ((x - mu.reshape(shape)) ** 2).mean(axis=reduce)
    x_hat = (x - mu.reshape(shape)) / np.sqrt(sigma2.reshape(shape) + epsilon)
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    return y, mu, sigma2


def numpy_ghost_batch_norm(x: np.ndarray, group_size: int, momentum: float,
                           mask: np.ndarray | None = None, epsilon: float = 1e-3
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ghost BN from its definition, in float64 NumPy, channels last, gamma 1 and beta 0.

    Consecutive groups of `group_size` examples, the last one smaller where the
    group size does not divide the batch, each normalized with its own
    (masked) statistics. Returns (y, moving_mean, moving_variance) after one
    step from Keras' initial 0 and 1, towards the groups' statistics averaged
    with weights proportional to the groups' sizes.
    """
    outputs, means, variances, sizes = [], [], [], []
    for start in range(0, len(x), group_size):
        group = x[start:start + group_size].astype(np.float64)
        if mask is None:
            weights = np.ones(group.shape[:-1] + (1,))
        else:
            weights = mask[start:start + group_size][..., None].astype(np.float64)
        axes = tuple(range(group.ndim - 1))
        mu = (group * weights).sum(axes) / weights.sum(axes)
        sigma2 = (((group - mu) ** 2) * weights).sum(axes) / weights.sum(axes)
        outputs.append((group - mu) / np.sqrt(sigma2 + epsilon))
        means.append(mu)
        variances.append(sigma2)
        sizes.append(len(group))
    share = np.array(sizes, np.float64)[:, None] / len(x)
    moving_mean = (1 - momentum) * (share * np.array(means)).sum(0)
    moving_variance = momentum + (1 - momentum) * (share * np.array(variances)).sum(0)
    return np.concatenate(outputs), moving_mean, moving_variance
