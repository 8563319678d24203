"""TensorFlow's fast paths: the fused kernel, and a row view with a hand-written gradient.

Channels-last inputs take one of two paths, chosen per call by size (under XLA,
always the rows):

- 16+ channels, rank >= 3 and 100,000+ elements: TensorFlow's fused kernel
  (`FusedBatchNormV3`: one op forward and one backward instead of a dozen) on
  the input viewed as (N, H*W, 1, C), a free reshape. The kernel returns the
  Bessel-corrected variance `m/(m-1) * sigma^2`; we undo the correction so
  `moving_variance` matches Keras.
- otherwise (few channels, small tensors, 2-D inputs): the input viewed as
  rows (N, H*W*C), summed over N first (contiguous memory), with a
  hand-written gradient; the data are shifted by one sample per channel
  first, which makes it exact for constant inputs and accurate far from zero.

Replicas are those of the enclosing `tf.distribute` strategy.
"""

from __future__ import annotations

import tensorflow as tf

from bn_keras import keras_compat

# cuDNN refuses smaller epsilons in its fused kernel; below this we take the
# row path so the result never depends on the device.
_FUSED_MIN_EPSILON = 1.001e-5
_FAST_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
# The fused CPU kernel is slow with few channels (2.5x Keras' time on 128x28x28x6),
# on 2-D inputs and on small tensors, where its fixed cost dominates (1.6x Keras' on
# 10x10x10x16, 0.57x on 64x10x10x16); the row path wins there. Measured with
# benchmarks/bench_layer.py and the crossover sweep in its --crossover mode.
_FUSED_MIN_CHANNELS = 16
_FUSED_MIN_ELEMENTS = 100_000


class TensorFlowBackend:
    """TensorFlow: the fused and row kernels; replicas of the enclosing tf.distribute
    strategy."""

    name = "tensorflow"

    def kernel(self, x, channel_axis: int, epsilon: float, training: bool):
        """The row kernel, the fused one, or, where the batch size is unknown while
        tracing, a choice between them at run time; under XLA the rows; None off the
        channels-last layout."""
        rank = len(x.shape)
        if rank < 2 or channel_axis != rank - 1 or x.dtype not in _FAST_DTYPES:
            return None
        if keras_compat.in_xla_context():
            # Under XLA the rows are the fastest kernel at most sizes and close at the
            # others (`bench_layer.py --xla`: 0.23x Keras' time at 256x32x32x64, fused
            # 0.55x; 0.84x at 128x28x28x6, fused 0.75x), and a run-time choice between
            # kernels (tf.cond on the size, where the batch size is unknown while
            # tracing) aborts XLA's dynamic-shape pass in the gradient.
            return ROWS
        if not (rank >= 3 and x.shape[-1] >= _FUSED_MIN_CHANNELS
                and epsilon >= _FUSED_MIN_EPSILON):
            return ROWS
        if x.shape.is_fully_defined():
            return FUSED if x.shape.num_elements() >= _FUSED_MIN_ELEMENTS else ROWS
        return FUSED_OR_ROWS

    def replicas_in_sync(self) -> int:
        context = tf.distribute.get_replica_context()
        return 1 if context is None else context.num_replicas_in_sync

    def sum_over_replicas(self, t):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, t)


class _Fused:
    """FusedBatchNormV3 on the input viewed as (N, H*W, 1, C)."""

    def batch_norm(self, x, gamma, beta, epsilon, channel_axis):
        y, mean, variance = fused_batch_norm(x, gamma, beta, epsilon)
        return tf.cast(y, tf.float32), mean, variance

    def normalize(self, x, mean, variance, gamma, beta, epsilon, channel_axis):
        return tf.cast(fused_normalize(x, mean, variance, gamma, beta, epsilon), tf.float32)


class _Rows:
    """The input viewed as (N, R*C) rows, with a hand-written gradient."""

    def batch_norm(self, x, gamma, beta, epsilon, channel_axis):
        return rows_batch_norm(x, gamma, beta, epsilon)

    def normalize(self, x, mean, variance, gamma, beta, epsilon, channel_axis):
        return rows_normalize(x, mean, variance, gamma, beta, epsilon)


class _FusedOrRows:
    """The fused kernel for inputs of 100,000+ elements, the rows below, chosen while the
    step runs: the batch size is unknown while tracing."""

    def batch_norm(self, x, gamma, beta, epsilon, channel_axis):
        return tf.cond(tf.size(x) >= _FUSED_MIN_ELEMENTS,
                       lambda: FUSED.batch_norm(x, gamma, beta, epsilon, channel_axis),
                       lambda: ROWS.batch_norm(x, gamma, beta, epsilon, channel_axis))

    def normalize(self, x, mean, variance, gamma, beta, epsilon, channel_axis):
        args = (x, mean, variance, gamma, beta, epsilon, channel_axis)
        return tf.cond(tf.size(x) >= _FUSED_MIN_ELEMENTS,
                       lambda: FUSED.normalize(*args), lambda: ROWS.normalize(*args))


FUSED, ROWS, FUSED_OR_ROWS = _Fused(), _Rows(), _FusedOrRows()


BACKEND = TensorFlowBackend()


def fused_batch_norm(x, gamma, beta, epsilon):
    """FusedBatchNormV3 in training mode: (y in x's dtype, mu, biased sigma^2)."""
    nhwc = _as_nhwc(x)
    gamma, beta = _gamma_beta(gamma, beta, x.shape[-1])
    y, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
        nhwc, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True
    )
    # The kernel divides by m - 1; Keras' moving average takes the biased (1/m) variance.
    m = tf.cast(tf.shape(nhwc)[0] * tf.shape(nhwc)[1], tf.float32)
    variance = corrected_variance * ((m - 1.0) / tf.maximum(m, 1.0))
    return tf.reshape(y, tf.shape(x)), mean, variance


def fused_normalize(x, mean, variance, gamma, beta, epsilon):
    """FusedBatchNormV3 in inference mode, with the given statistics."""
    nhwc = _as_nhwc(x)
    gamma, beta = _gamma_beta(gamma, beta, x.shape[-1])
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        nhwc, gamma, beta, mean=mean, variance=variance, epsilon=epsilon,
        data_format="NHWC", is_training=False,
    )
    return tf.reshape(y, tf.shape(x))


def _as_nhwc(x):
    """x viewed as (N, H*W, 1, C): a free reshape the fused kernel accepts."""
    return tf.reshape(x, [tf.shape(x)[0], -1, 1, x.shape[-1]])


def rows_batch_norm(x, gamma, beta, epsilon):
    """Training-mode BN for channels-last inputs the fused kernel is slow on.

    With few channels its per-channel reductions do not vectorize, and on
    small or 2-D tensors its fixed cost dominates, so this path views x as
    (N, R*C) rows, reduces over N first (contiguous, vectorized) and then over
    R, and uses a hand-written gradient that needs two reductions and one pass
    over the data. Returns (y, mu, biased sigma^2).
    """
    x = tf.cast(x, tf.float32)
    gamma, beta = _gamma_beta(gamma, beta, x.shape[-1])
    return _batch_norm_channels_last(x, gamma, beta, epsilon)


def rows_normalize(x, mean, variance, gamma, beta, epsilon):
    """Inference-mode BN for channels-last inputs: y = (x - mean) * a + beta.

    a = gamma / sqrt(variance + eps); mean, a and beta are tiled along (N, R*C) rows,
    which broadcasts much faster than a C-vector when C is small. Centering first keeps
    the digits that x * a + (beta - mean * a) loses when |mean| is large against the
    spread of x (as the training path does).
    """
    x = tf.cast(x, tf.float32)
    gamma, beta = _gamma_beta(gamma, beta, x.shape[-1])
    a = gamma * tf.math.rsqrt(tf.convert_to_tensor(variance) + epsilon)
    rows, groups = _as_rows(x)
    centered = rows - _tile(tf.convert_to_tensor(mean), groups)
    return _from_rows(centered * _tile(a, groups) + _tile(beta, groups), x)


def _gamma_beta(gamma, beta, channels):
    gamma = tf.ones([channels], tf.float32) if gamma is None else tf.convert_to_tensor(gamma)
    beta = tf.zeros([channels], tf.float32) if beta is None else tf.convert_to_tensor(beta)
    return gamma, beta


def _as_rows(x):
    """x viewed as (N, R*C) and R, a Python int where the shape is static."""
    channels = x.shape[-1]
    rows = x if len(x.shape) == 2 else tf.reshape(x, [tf.shape(x)[0], -1])
    width = rows.shape[1]
    groups = width // channels if width is not None else tf.shape(rows)[1] // channels
    return rows, groups


def _from_rows(rows, like):
    """Undoes _as_rows: rows back in the shape of `like`."""
    return rows if len(like.shape) == 2 else tf.reshape(rows, tf.shape(like))


def _tile(v, groups):
    """A per-channel vector repeated along the R*C row positions."""
    return v if isinstance(groups, int) and groups == 1 else tf.tile(v, [groups])


def _batch_norm_channels_last(x, gamma, beta, epsilon):
    """Batch-statistics BN over every axis but the last, with an explicit gradient.

    Returns (y, mu, sigma^2). x is viewed as rows of shape (N, R*C): sums run
    over N first, where memory is contiguous, then over the R groups of C.
    The data are first shifted by one sample per channel, so the sums stay
    small and exact-ish for large offsets and give exactly zero variance for
    constant inputs (where Keras' output is rounding noise times 1/sqrt(eps)).
    """
    channels = x.shape[-1]
    rows, groups = _as_rows(x)
    if rows.shape[0] is not None and isinstance(groups, int):
        inv_m = 1.0 / (rows.shape[0] * groups)  # static: no shape ops in the graph
    else:
        inv_m = 1.0 / tf.cast(tf.shape(rows)[0] * groups, tf.float32)

    def per_channel_sum(t):
        column_sums = tf.reduce_sum(t, axis=0)
        if isinstance(groups, int) and groups == 1:
            return column_sums
        return tf.reduce_sum(tf.reshape(column_sums, [-1, channels]), axis=0)

    @tf.custom_gradient
    def batch_norm(rows, gamma, beta):
        shift = tf.stop_gradient(rows[0, :channels])
        shifted = rows - _tile(shift, groups)
        mean_shifted = per_channel_sum(shifted) * inv_m
        mu = shift + mean_shifted
        centered = shifted - _tile(mean_shifted, groups)
        sigma2 = per_channel_sum(tf.square(centered)) * inv_m
        inv_sigma = tf.math.rsqrt(sigma2 + epsilon)
        scale = gamma * inv_sigma
        # y = gamma * x_hat + beta, with x_hat = (x - mu) * inv_sigma folded into one scale.
        y = centered * _tile(scale, groups) + _tile(beta, groups)

        def grad(dy, _unused_d_mu, _unused_d_sigma2):
            d_beta = per_channel_sum(dy)
            d_gamma = per_channel_sum(dy * centered) * inv_sigma
            # dx = gamma*inv_sigma/m * (m*dy - sum(dy) - x_hat*sum(dy*x_hat))
            c_centered = -scale * d_gamma * inv_sigma * inv_m
            c_const = -scale * d_beta * inv_m
            d_rows = dy * _tile(scale, groups) + (
                centered * _tile(c_centered, groups) + _tile(c_const, groups))
            return d_rows, d_gamma, d_beta

        return (y, tf.stop_gradient(mu), tf.stop_gradient(sigma2)), grad

    y, mu, sigma2 = batch_norm(rows, gamma, beta)
    return _from_rows(y, x), mu, sigma2
