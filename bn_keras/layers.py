"""Batch Normalization, written out: a drop-in for `keras.layers.BatchNormalization`."""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf
from keras import constraints, initializers, regularizers

# cuDNN refuses smaller epsilons in its fused kernel; below this we take the
# general path so the result never depends on the device.
_FUSED_MIN_EPSILON = 1.001e-5
_FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
# The fused CPU kernel is slow with few channels (2.5x Keras' time on 128x28x28x6),
# on 2-D inputs and on small tensors, where its fixed cost dominates (1.6x Keras' on
# 10x10x10x16, 0.57x on 64x10x10x16); the row path wins there. Measured with
# benchmarks/bench_layer.py and the crossover sweep in its --crossover mode.
_FUSED_MIN_CHANNELS = 16
_FUSED_MIN_ELEMENTS = 100_000
_RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


@keras.saving.register_keras_serializable(package="bn_keras", name="BatchNormalization")
class BatchNormalization(keras.layers.Layer):
    """Batch Normalization (Ioffe & Szegedy, 2015), computed by this layer itself.

    For each feature channel `c` (the `axis` dimension), over a mini-batch
    `B = {x_1 ... x_m}` (every position of the other dimensions):

        mu      = 1/m * sum_i x_i                      # mini-batch mean
        sigma^2 = 1/m * sum_i (x_i - mu)^2             # mini-batch variance (biased)
        x_hat_i = (x_i - mu) / sqrt(sigma^2 + epsilon)  # normalize
        y_i     = gamma * x_hat_i + beta               # scale and shift

    **Training** (`training=True`, and the layer is trainable): the layer
    normalizes with the batch's own `mu` and `sigma^2` and updates the moving
    statistics the way Keras does:

        moving_mean     = momentum * moving_mean     + (1 - momentum) * mu
        moving_variance = momentum * moving_variance + (1 - momentum) * sigma^2

    (Keras' `momentum=0.99` is PyTorch's `momentum=0.01`; Keras keeps the biased
    variance, PyTorch the unbiased one.)

    **Inference** (`training=False` or `trainable=False`): the layer normalizes
    with `moving_mean` and `moving_variance` instead of the batch's statistics,
    so its output for one example does not depend on the rest of the batch.
    As in Keras, setting `trainable = False` puts the layer in inference mode.

    The weights are Keras' own, with the same names, shapes and order
    (`gamma`, `beta`, `moving_mean`, `moving_variance`, then the renorm
    variables), so `set_weights(keras_bn.get_weights())` works both ways and a
    model switches implementation without retraining.

    **Speed.** Channels-last inputs without a mask, cross-replica
    synchronization, renorm or ghost batches take a fast path. With 16 or
    more channels, rank >= 3 and at least 100,000 elements, that is
    TensorFlow's fused kernel (`FusedBatchNormV3`: one op forward and one
    backward instead of a dozen) on the input viewed as (N, H*W, 1, C). The
    kernel returns the Bessel-corrected variance `m/(m-1) * sigma^2`; the layer
    undoes the correction so `moving_variance` matches Keras. Otherwise (few
    channels, small tensors, 2-D inputs) the input is viewed as
    rows (N, H*W*C), whose sums over N and per-channel scales vectorize, with
    a hand-written gradient. Every other input takes the general path, which
    spells out the four formulas above.

    Args:
        axis: Integer, the feature axis (`-1` for channels-last, `1` after a
            `channels_first` convolution).
        momentum: Momentum of the moving averages.
        epsilon: Small float added to the variance to avoid dividing by zero.
        center: If `True`, add the learned offset `beta`.
        scale: If `True`, multiply by the learned scale `gamma`.
        beta_initializer, gamma_initializer: Initializers of `beta`, `gamma`.
        moving_mean_initializer, moving_variance_initializer: Initializers of
            the moving statistics.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        renorm: Whether to use Batch Renormalization (Ioffe, 2017), which
            corrects the batch statistics towards moving ones during training.
        renorm_clipping: Dict with optional keys `"rmax"`, `"rmin"`, `"dmax"`
            clipping the renorm corrections `r` to `[rmin, rmax]` and `d` to
            `[-dmax, dmax]`.
        renorm_momentum: Momentum of the renorm moving statistics.
        synchronized: If `True`, under a `tf.distribute` strategy with several
            replicas the batch statistics are reduced across all replicas, so
            every replica normalizes with the global batch's statistics.
        virtual_batch_size: Ghost Batch Normalization (Hoffer et al., 2017):
            if set, each training batch is split into consecutive groups of
            this many examples, each normalized with its own statistics; the
            moving statistics take the groups' average. It must divide the
            batch size. Inference is unaffected. (tf-keras 2.x had this
            argument; Keras 3 dropped it.)
        **kwargs: Base layer keyword arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: Input tensor of any rank.
        training: Python boolean: batch statistics (`True`) or moving
            statistics (`False`, the default).
        mask: Optional boolean tensor of rank `rank(inputs) - 1`; masked-out
            positions do not count in the batch statistics.

    References:
        - Ioffe & Szegedy, 2015, https://arxiv.org/abs/1502.03167
        - Ioffe, 2017 (Batch Renormalization), https://arxiv.org/abs/1702.03275
        - Hoffer, Hubara & Soudry, 2017 (Ghost BN), https://arxiv.org/abs/1705.08741
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        virtual_batch_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_arguments(axis, renorm, renorm_clipping, synchronized, virtual_batch_size)
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.renorm = renorm
        # As in Keras: with renorm, no clipping is stored as {}.
        self.renorm_clipping = dict(renorm_clipping or {}) if renorm else renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.synchronized = synchronized
        self.virtual_batch_size = virtual_batch_size
        self.supports_masking = True

        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"Axis {self.axis} is out of bounds for input shape {tuple(input_shape)}. "
                f"Received: axis={self.axis}. BatchNormalization: axis={self.axis} is out of "
                f"range for inputs of rank {rank}."
            )
        self._channel_axis = self.axis % rank
        if self.virtual_batch_size is not None and self._channel_axis == 0:
            raise ValueError(
                "When using `virtual_batch_size`, the batch dimension must be 0 and thus axis "
                f"cannot include 0. Received axis={self.axis}. BatchNormalization: ghost "
                "batches split axis 0, so it cannot be the feature axis."
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"BatchNormalization: the feature axis {self.axis} of input shape "
                f"{tuple(input_shape)} must have a known size."
            )
        shape = (channels,)
        if self.scale:
            self.gamma = self._add_statistic("gamma", self.gamma_initializer, shape, True,
                                             self.gamma_regularizer, self.gamma_constraint)
        if self.center:
            self.beta = self._add_statistic("beta", self.beta_initializer, shape, True,
                                            self.beta_regularizer, self.beta_constraint)
        self.moving_mean = self._add_statistic("moving_mean", self.moving_mean_initializer, shape)
        self.moving_variance = self._add_statistic(
            "moving_variance", self.moving_variance_initializer, shape
        )
        if self.renorm:
            # Batch renorm tracks standard deviations, initialized from the
            # variance initializer, as Keras does.
            def stddev_initializer(shape, dtype=None):
                return tf.sqrt(_clone(self.moving_variance_initializer)(shape, dtype=dtype))

            self.moving_stddev = self._add_statistic("moving_stddev", stddev_initializer, shape)
            self.renorm_mean = self._add_statistic(
                "renorm_mean", _clone(self.moving_mean_initializer), shape
            )
            self.renorm_stddev = self._add_statistic("renorm_stddev", stddev_initializer, shape)

        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: channels})
        self._reduction_axes = [i for i in range(rank) if i != self._channel_axis]
        # Channels-last inputs without renorm or ghost batches take the fast paths.
        self._channels_last_plain = (
            rank >= 2
            and self._channel_axis == rank - 1
            and not self.renorm
            and self.virtual_batch_size is None
            and self.epsilon >= _FUSED_MIN_EPSILON
        )

    def _add_statistic(self, name, initializer, shape, trainable=False,
                       regularizer=None, constraint=None):
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, regularizer=regularizer,
            constraint=constraint, trainable=trainable, autocast=False,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    # ------------------------------------------------------------------- call
    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask provided should be one dimension less than the inputs. Received: "
                f"mask.shape={mask.shape}, inputs.shape={inputs.shape}. BatchNormalization: "
                "the mask marks positions, and every feature at a position shares it."
            )
        training = bool(training) and self.trainable
        fast = self._channels_last_plain and mask is None and not (
            training and self._needs_cross_replica_sync()
        )
        x = tf.cast(inputs, tf.float32)
        if not fast:
            return tf.cast(self._general(x, training, mask), self.compute_dtype)

        def fused():
            return tf.cast(self._fused(inputs, training), tf.float32)

        def rows():
            return self._batch_normalize_rows(x) if training else self._normalize_rows(x)

        use_fused = self._use_fused(inputs)
        if isinstance(use_fused, bool):
            outputs = fused() if use_fused else rows()
        else:  # the batch size is unknown while tracing: decide per call
            outputs = tf.cond(use_fused, fused, rows)
        return tf.cast(outputs, self.compute_dtype)

    def _use_fused(self, inputs):
        """True or False where the shape decides, else a boolean tensor."""
        if not (len(inputs.shape) >= 3 and inputs.shape[-1] >= _FUSED_MIN_CHANNELS
                and inputs.dtype in _FUSED_DTYPES):
            return False
        if inputs.shape.is_fully_defined():
            return inputs.shape.num_elements() >= _FUSED_MIN_ELEMENTS
        return tf.size(inputs) >= _FUSED_MIN_ELEMENTS

    def _fused(self, inputs, training):
        """FusedBatchNormV3 on the inputs viewed as NHWC (N, H*W, 1, C): a free reshape."""
        channels = inputs.shape[-1]
        x = tf.reshape(inputs, [tf.shape(inputs)[0], -1, 1, channels])
        gamma, beta = self._gamma_beta(channels)
        if training:
            y, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            # The kernel divides by m - 1; Keras' moving average takes the biased (1/m) variance.
            m = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float32)
            self._update_moving_statistics(
                mean, corrected_variance * ((m - 1.0) / tf.maximum(m, 1.0)))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
        return tf.reshape(y, tf.shape(inputs))

    def _batch_normalize_rows(self, x):
        """Training-mode BN for channels-last inputs the fused kernel is slow on.

        With few channels its per-channel reductions do not vectorize, and on
        small or 2-D tensors its fixed cost dominates, so this path views x as (N, R*C) rows, reduces over N
        first (contiguous, vectorized) and then over R, and uses a hand-written
        gradient that needs two reductions and one pass over the data.
        """
        gamma, beta = self._gamma_beta(x.shape[-1])
        y, mean, variance = _batch_norm_channels_last(x, gamma, beta, self.epsilon)
        self._update_moving_statistics(mean, variance)
        return y

    def _normalize_rows(self, x):
        """Inference-mode BN for channels-last inputs: y = x * a + b.

        a = gamma / sqrt(moving_variance + eps) and b = beta - moving_mean * a
        are tiled along (N, R*C) rows, which broadcasts much faster than a
        C-vector when C is small.
        """
        gamma, beta = self._gamma_beta(x.shape[-1])
        a = gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        b = beta - self.moving_mean * a
        rows, groups = _as_rows(x)
        return _from_rows(rows * _tile(a, groups) + _tile(b, groups), x)

    def _general(self, x, training, mask):
        """The four formulas, for every input the fast paths cannot take."""
        gamma, beta = self._gamma_beta(x.shape[self._channel_axis])
        if not training:
            return self._normalize(x, self.moving_mean, self.moving_variance, gamma, beta)

        if self.virtual_batch_size is not None:
            return self._ghost_batch_normalize(x, mask, gamma, beta)
        mean, variance = self._moments(x, mask, self._reduction_axes)
        if self.renorm:
            r, d = self._renorm_correction(mean, variance)
            # (x_hat * r + d) * gamma + beta == x_hat * (r * gamma) + (d * gamma + beta)
            beta = d * gamma + beta
            gamma = r * gamma
            self._update_renorm_statistics(mean, variance)
        else:
            self._update_moving_statistics(mean, variance)
        return self._normalize(x, mean, variance, gamma, beta)

    def _normalize(self, x, mean, variance, gamma, beta):
        """x_hat = (x - mu) / sqrt(sigma^2 + eps); y = gamma * x_hat + beta."""
        broadcast = self._broadcast_shape(len(x.shape))
        mu = tf.reshape(mean, broadcast)
        inv_sigma = tf.math.rsqrt(tf.reshape(variance, broadcast) + self.epsilon)
        x_hat = (x - mu) * inv_sigma
        return tf.reshape(gamma, broadcast) * x_hat + tf.reshape(beta, broadcast)

    def _ghost_batch_normalize(self, x, mask, gamma, beta):
        """Normalizes each group of `virtual_batch_size` consecutive examples on its own."""
        vbs = self.virtual_batch_size
        batch = x.shape[0]
        if batch is not None and batch % vbs:
            raise ValueError(
                f"BatchNormalization: virtual_batch_size={vbs} does not divide the batch "
                f"size {batch}."
            )
        dynamic_batch = tf.shape(x)[0]
        checks = [] if batch is not None else [tf.debugging.assert_equal(
            dynamic_batch % vbs, 0,
            message=f"BatchNormalization: virtual_batch_size={vbs} does not divide the batch size",
        )]
        with tf.control_dependencies(checks):
            ghost_shape = tf.concat([[-1, vbs], tf.shape(x)[1:]], axis=0)
            grouped = tf.reshape(x, ghost_shape)
        grouped_mask = None if mask is None else tf.reshape(
            mask, tf.concat([[-1, vbs], tf.shape(mask)[1:]], axis=0)
        )
        # Reduce over each group's examples and positions, never across groups.
        axes = [a + 1 for a in self._reduction_axes]
        mean, variance = self._moments(grouped, grouped_mask, axes, keepdims=True)
        self._update_moving_statistics(
            tf.reshape(tf.reduce_mean(mean, axis=0), [-1]),
            tf.reshape(tf.reduce_mean(variance, axis=0), [-1]),
        )
        inv_sigma = tf.math.rsqrt(variance + self.epsilon)
        broadcast = [1] + self._broadcast_shape(len(x.shape))
        y = tf.reshape(gamma, broadcast) * ((grouped - mean) * inv_sigma) + tf.reshape(beta, broadcast)
        return tf.reshape(y, tf.shape(x))

    # -------------------------------------------------------------- statistics
    def _moments(self, x, mask, axes, keepdims=False):
        """mu and the biased sigma^2 over `axes`, masked and/or across replicas."""
        if mask is None:
            weights = None
        else:
            weights = tf.cast(tf.broadcast_to(tf.expand_dims(mask, -1), tf.shape(x)), x.dtype)
        sync = self._needs_cross_replica_sync()

        def total(t):
            s = tf.reduce_sum(t, axis=axes, keepdims=True)
            if sync:
                s = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, s)
            return s

        if weights is None and not sync:
            mean = tf.reduce_mean(x, axis=axes, keepdims=True)
            variance = tf.reduce_mean(tf.math.squared_difference(x, tf.stop_gradient(mean)),
                                      axis=axes, keepdims=True)
        else:
            count = total(tf.ones_like(x) if weights is None else weights)
            # Two passes (mean first, then squared deviations) stay accurate for
            # large inputs, unlike E[x^2] - E[x]^2.
            mean = tf.math.divide_no_nan(total(x if weights is None else x * weights), count)
            deviation = tf.math.squared_difference(x, tf.stop_gradient(mean))
            variance = tf.math.divide_no_nan(
                total(deviation if weights is None else deviation * weights), count
            )
        if keepdims:
            return mean, variance
        return tf.reshape(mean, [-1]), tf.reshape(variance, [-1])

    def _needs_cross_replica_sync(self):
        if not self.synchronized:
            return False
        context = tf.distribute.get_replica_context()
        return context is not None and context.num_replicas_in_sync > 1

    def _update_moving_statistics(self, mean, variance):
        self._assign_moving_average(self.moving_mean, mean, self.momentum)
        self._assign_moving_average(self.moving_variance, variance, self.momentum)

    @staticmethod
    def _assign_moving_average(variable, value, momentum):
        # momentum * old + (1 - momentum) * new, as one in-place update.
        variable.assign_sub((variable - tf.stop_gradient(value)) * (1.0 - momentum))

    def _renorm_correction(self, mean, variance):
        """Batch renorm's r = sigma_B / sigma_moving and d = (mu_B - mu_moving) / sigma_moving."""
        stddev = tf.sqrt(variance + self.epsilon)
        renorm_stddev = tf.maximum(self.renorm_stddev, tf.sqrt(self.epsilon))
        r = stddev / renorm_stddev
        d = (mean - self.renorm_mean) / renorm_stddev
        clipping = self.renorm_clipping or {}
        if clipping.get("rmin") is not None:
            r = tf.maximum(r, clipping["rmin"])
        if clipping.get("rmax") is not None:
            r = tf.minimum(r, clipping["rmax"])
        if clipping.get("dmax") is not None:
            d = tf.clip_by_value(d, -clipping["dmax"], clipping["dmax"])
        return tf.stop_gradient(r), tf.stop_gradient(d)

    def _update_renorm_statistics(self, mean, variance):
        stddev = tf.sqrt(variance + self.epsilon)
        self._assign_moving_average(self.renorm_mean, mean, self.renorm_momentum)
        self._assign_moving_average(self.renorm_stddev, stddev, self.renorm_momentum)
        self._assign_moving_average(self.moving_mean, mean, self.momentum)
        self._assign_moving_average(self.moving_stddev, stddev, self.momentum)
        self.moving_variance.assign(tf.nn.relu(tf.square(self.moving_stddev) - self.epsilon))

    # ----------------------------------------------------------------- helpers
    def _gamma_beta(self, channels):
        gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta if self.center else tf.zeros([channels], tf.float32)
        return tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)

    def _broadcast_shape(self, rank):
        shape = [1] * rank
        shape[self._channel_axis] = -1
        return shape

    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
            "renorm": self.renorm,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
            "virtual_batch_size": self.virtual_batch_size,
        }
        return {**super().get_config(), **config}


# Both BN layers a model may hold: for code that finds them (diagnostics, BN folding).
BN_TYPES = (BatchNormalization, keras.layers.BatchNormalization)


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


def _check_arguments(axis, renorm, renorm_clipping, synchronized, virtual_batch_size) -> None:
    """Raises for arguments Keras' layer (or tf-keras', for `virtual_batch_size`) refuses.

    Each message starts with Keras' own wording for the mistake, so code written
    against the built-in keeps matching it, and adds our detail after it.
    """
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        detail = f"BatchNormalization: `axis` must be an int, got {axis!r}."
        try:
            int(axis)  # what Keras does with `axis`; its error is Keras' wording
        except (TypeError, ValueError) as e:
            raise type(e)(f"{e}. {detail}") from None
        raise TypeError(detail)
    if virtual_batch_size is not None and (
        isinstance(virtual_batch_size, bool)
        or not isinstance(virtual_batch_size, numbers.Integral)
        or virtual_batch_size < 1
    ):
        raise ValueError(
            "`virtual_batch_size` must be a positive integer. "
            f"Received: virtual_batch_size={virtual_batch_size!r}. "
            "BatchNormalization: use None to normalize the whole batch at once."
        )
    if virtual_batch_size is not None and (renorm or synchronized):
        raise ValueError(
            f"BatchNormalization: `virtual_batch_size` cannot be combined with "
            f"renorm={renorm!r} or synchronized={synchronized!r}."
        )
    if not renorm:
        return
    clipping = dict(renorm_clipping or {})
    unknown = sorted(set(clipping) - set(_RENORM_CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"Received invalid keys for `renorm_clipping` argument: {clipping}. "
            f"Supported values: {list(_RENORM_CLIPPING_KEYS)}. "
            f"BatchNormalization: unknown `renorm_clipping` keys {unknown}."
        )
    rmax, rmin, dmax = (clipping.get(k) for k in _RENORM_CLIPPING_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            "rmax should be greater than rmin in the `renorm_clipping` argument. "
            f"Received: rmax={rmax}, rmin={rmin}. BatchNormalization: r would be "
            f"clipped to an empty range [{rmin}, {rmax}]."
        )
    if dmax is not None and dmax < 0:
        raise ValueError(
            "dmax should be non-negative in the `renorm_clipping` argument. "
            f"Received: dmax={dmax}. BatchNormalization: d is clipped to [-dmax, dmax]."
        )


def _clone(initializer):
    """A fresh copy of a configured initializer, so two weights do not share a seed."""
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer
