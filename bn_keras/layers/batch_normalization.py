"""Batch Normalization, written out: a drop-in for `keras.layers.BatchNormalization`.

It runs on every Keras backend (TensorFlow, JAX, PyTorch). The four formulas
are here, in `keras.ops`; `bn_keras.backends` holds the kernels that compute
the same thing faster with a backend's own operations.
"""

from __future__ import annotations

import keras
from keras import constraints, initializers, ops, regularizers

from bn_keras import backends, keras_compat
from bn_keras.layers.arguments import check_arguments


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
    model switches implementation without retraining. The layer runs on the
    TensorFlow, JAX and PyTorch backends with the same arguments, weights and
    config; a `.keras` file saved on one loads on the others.

    **Speed.** Plain BN (no mask, renorm, ghost batches or cross-replica
    reduction) takes the backend's fast path where it has one
    (`bn_keras.backends`): on TensorFlow, for channels-last inputs, the fused
    kernel or a row view with a hand-written gradient; on PyTorch,
    `torch.nn.functional.batch_norm`. Everything else, and JAX, where XLA
    fuses the formulas itself, takes the general path below.

    Args:
        axis: Integer, the feature axis (`-1` for channels-last, `1` after a
            `channels_first` convolution).
        momentum: Momentum of the moving averages.
        epsilon: Small float added to the variance to avoid dividing by zero.
        center: If `True`, add the learned offset `beta`.
        scale: If `True`, multiply by the learned scale `gamma`.
        beta_initializer: Initializer of `beta`.
        gamma_initializer: Initializer of `gamma`.
        moving_mean_initializer: Initializer of the moving mean.
        moving_variance_initializer: Initializer of the moving variance.
        beta_regularizer: Optional regularizer of `beta`.
        gamma_regularizer: Optional regularizer of `gamma`.
        beta_constraint: Optional constraint on `beta`.
        gamma_constraint: Optional constraint on `gamma`.
        renorm: Whether to use Batch Renormalization (Ioffe, 2017), which
            corrects the batch statistics towards moving ones during training.
        renorm_clipping: Dict with optional keys `"rmax"`, `"rmin"`, `"dmax"`
            clipping the renorm corrections `r` to `[rmin, rmax]` and `d` to
            `[-dmax, dmax]`.
        renorm_momentum: Momentum of the renorm moving statistics.
        synchronized: If `True`, where several replicas each hold part of the
            batch, the training-mode statistics are the global batch's: counts,
            sums and squared deviations are summed across the replicas, each
            part weighted by its size, and the gradient flows back through the
            sums, so every replica normalizes and updates its moving statistics
            as one device would on the concatenated batch. Replicas are those
            of a `tf.distribute` strategy on TensorFlow and the processes of the
            default `torch.distributed` group on PyTorch (gloo or NCCL, e.g.
            under DistributedDataParallel). On JAX, `keras.distribution.
            DataParallel` runs one program over the global batch, so the
            statistics are global with or without this argument. Inference uses
            no reduction, and on one device it changes nothing, on every backend
            (Keras' own layer refuses it outside TensorFlow). Not combined with
            `virtual_batch_size` (ghost batches are per replica).
        virtual_batch_size: Ghost Batch Normalization (Hoffer et al., 2017):
            if set, each training batch is split into consecutive groups of
            this many examples, each normalized with its own statistics. A
            batch it does not divide (an epoch's partial last batch) ends with
            one smaller group of the remaining examples. The moving statistics
            take the groups' means and variances averaged with weights
            proportional to the groups' sizes (with whole groups, the plain
            average, as tf-keras took). Inference is unaffected. (tf-keras 2.x
            had this argument; Keras 3 dropped it.)
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
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: str | initializers.Initializer = "zeros",
        gamma_initializer: str | initializers.Initializer = "ones",
        moving_mean_initializer: str | initializers.Initializer = "zeros",
        moving_variance_initializer: str | initializers.Initializer = "ones",
        beta_regularizer: str | regularizers.Regularizer | None = None,
        gamma_regularizer: str | regularizers.Regularizer | None = None,
        beta_constraint: str | constraints.Constraint | None = None,
        gamma_constraint: str | constraints.Constraint | None = None,
        renorm: bool = False,
        renorm_clipping: dict[str, float] | None = None,
        renorm_momentum: float = 0.99,
        synchronized: bool = False,
        virtual_batch_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_arguments(axis, renorm, renorm_clipping, synchronized, virtual_batch_size)
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
        # Ghost BN: the moving variance takes the mean of the groups' variances (False, as
        # in training) or the variance of the whole batch, the spread between group means
        # included (True: set by recalibrate_batch_norm(variance="population") only).
        self._pool_groups = False

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
                return ops.sqrt(_clone(self.moving_variance_initializer)(shape, dtype=dtype))

            self.moving_stddev = self._add_statistic("moving_stddev", stddev_initializer, shape)
            self.renorm_mean = self._add_statistic(
                "renorm_mean", _clone(self.moving_mean_initializer), shape
            )
            self.renorm_stddev = self._add_statistic("renorm_stddev", stddev_initializer, shape)

        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: channels})
        self._reduction_axes = [i for i in range(rank) if i != self._channel_axis]
        self._backend = backends.current()
        self._plain = not self.renorm and self.virtual_batch_size is None

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
        kernel = self._fast_kernel(inputs, training, mask)
        if kernel is not None:
            if training:
                outputs, mean, variance = kernel.batch_norm(
                    inputs, self.gamma, self.beta, self.epsilon, self._channel_axis)
                self._update_moving_statistics(mean, variance)
            else:
                outputs = kernel.normalize(
                    inputs, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                    self.epsilon, self._channel_axis)
        else:
            # As Keras: float16/bfloat16 inputs are normalized in float32.
            x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
            outputs = self._general(x, training, mask)
        return ops.cast(outputs, self.compute_dtype)

    def _fast_kernel(self, inputs, training, mask):
        """The backend's kernel for this call, or None for the general path. Only plain BN
        (no renorm, ghost batches, mask or cross-replica reduction) may take one; which
        kernel, the backend alone decides."""
        if not self._plain or mask is not None or (training and self._reduces_over_replicas()):
            return None
        return self._backend.kernel(inputs, self._channel_axis, self.epsilon, training)

    def _general(self, x, training, mask):
        """The four formulas, for every input the fast paths do not take."""
        if not training:
            centered = x - self._broadcast(self.moving_mean, x)
            return self._scale_and_shift(centered, self._broadcast(self.moving_variance, x), x)
        if self.virtual_batch_size is not None:
            return self._ghost_batch_normalize(x, mask)
        valid = None if mask is None else ops.expand_dims(ops.cast(mask, "bool"), -1)
        mean, variance, centered = self._moments(x, valid, self._reduction_axes)
        batch_mean, batch_variance = ops.reshape(mean, (-1,)), ops.reshape(variance, (-1,))
        if not self.renorm:
            self._update_moving_statistics(batch_mean, batch_variance)
            return self._scale_and_shift(centered, variance, x)
        r, d = self._renorm_correction(batch_mean, batch_variance)
        self._update_renorm_statistics(batch_mean, batch_variance)
        # (x_hat * r + d) * gamma + beta == x_hat * (r * gamma) + (d * gamma + beta)
        gamma, beta = self._gamma_beta()
        return self._scale_and_shift(centered, variance, x, r * gamma, d * gamma + beta)

    def _moments(self, x, valid, axes):
        """mu, the biased sigma^2 (both kept along `axes`) and x - mu.

        Two passes, the mean first and then the squared deviations from it,
        stay accurate far from zero, unlike E[x^2] - E[x]^2. `valid`, a
        boolean tensor that broadcasts to x, marks the values that count.
        """
        reduce_replicas = self._reduces_over_replicas()
        if valid is None and not reduce_replicas:
            mean = ops.mean(x, axis=axes, keepdims=True)
            centered = x - mean
            return mean, ops.mean(ops.square(centered), axis=axes, keepdims=True), centered

        def totals(*ts):
            # Across replicas, the sums travel together: one reduction, not one each.
            sums = [ops.sum(t, axis=axes, keepdims=True) for t in ts]
            if not reduce_replicas:
                return sums
            reduced = self._backend.sum_over_replicas(ops.stack(sums))
            return [reduced[i] for i in range(len(sums))]

        if valid is None:
            ones, counted = ops.ones_like(x), (lambda t: t)
        else:
            valid = ops.broadcast_to(valid, ops.shape(x))
            ones, counted = ops.cast(valid, x.dtype), (lambda t: ops.where(valid, t, 0.0))
        count, total = totals(ones, counted(x))
        mean = ops.divide_no_nan(total, count)
        centered = x - mean
        (squares,) = totals(counted(ops.square(centered)))
        variance = ops.divide_no_nan(squares, count)
        return mean, variance, centered

    def _scale_and_shift(self, centered, variance, like, gamma=None, beta=None):
        """x_hat = (x - mu) / sqrt(sigma^2 + eps); y = gamma * x_hat + beta.

        Computed as (x - mu) * (gamma / sqrt(sigma^2 + eps)) + beta: the per-channel
        factor first, so each element takes one multiply and one add.
        """
        if gamma is None:
            gamma, beta = self._gamma_beta()
        scale = self._broadcast(gamma, like) * ops.rsqrt(variance + self.epsilon)
        return centered * scale + self._broadcast(beta, like)

    def _ghost_batch_normalize(self, x, mask):
        """Normalizes consecutive groups of `virtual_batch_size` examples, each on its own.

        The batch is padded to whole groups (the padding counts nowhere), seen
        as (groups, group size, ...), normalized over each group's examples
        and positions, never across groups, and unpadded.
        """
        size = self.virtual_batch_size
        shape = ops.shape(x)
        batch, rest = shape[0], tuple(shape[1:])
        groups = (batch + size - 1) // size
        padding = groups * size - batch
        valid = None if mask is None else ops.expand_dims(ops.cast(mask, "bool"), -1)
        if not (isinstance(padding, int) and padding == 0):
            x = ops.concatenate([x, ops.zeros((padding, *rest), x.dtype)], axis=0)
            real = ops.arange(groups * size) < batch
            real = ops.reshape(real, (-1,) + (1,) * len(rest))
            if valid is not None:
                valid = ops.concatenate(
                    [valid, ops.zeros((padding, *ops.shape(valid)[1:]), "bool")], axis=0)
            valid = real if valid is None else ops.logical_and(valid, real)
        grouped = ops.reshape(x, (groups, size, *rest))
        if valid is not None:
            valid = ops.reshape(valid, (groups, size, *ops.shape(valid)[1:]))
        axes = [a + 1 for a in self._reduction_axes]
        mean, variance, centered = self._moments(grouped, valid, axes)
        # Each group's weight is its share of the batch's examples.
        group_sizes = ops.minimum(size, batch - ops.arange(groups) * size)
        weights = ops.reshape(ops.cast(group_sizes, x.dtype) / ops.cast(batch, x.dtype),
                              (-1,) + (1,) * len(rest) + (1,))
        batch_mean = ops.sum(mean * weights, axis=0)
        batch_variance = ops.sum(variance * weights, axis=0)
        if self._pool_groups:  # the whole batch's variance (recalibrate_batch_norm's option)
            batch_variance += ops.sum(ops.square(mean - batch_mean) * weights, axis=0)
        self._update_moving_statistics(ops.reshape(batch_mean, (-1,)),
                                       ops.reshape(batch_variance, (-1,)))
        y = self._scale_and_shift(centered, variance, grouped)
        return ops.reshape(y, ops.shape(x))[:batch]

    # -------------------------------------------------------------- statistics
    def _reduces_over_replicas(self):
        return self.synchronized and self._backend.replicas_in_sync() > 1

    def _update_moving_statistics(self, mean, variance):
        self._assign_moving_average(self.moving_mean, mean, self.momentum)
        self._assign_moving_average(self.moving_variance, variance, self.momentum)

    @staticmethod
    def _assign_moving_average(variable, value, momentum):
        # momentum * old + (1 - momentum) * new, as one in-place update.
        variable.assign_sub((variable - ops.stop_gradient(value)) * (1.0 - momentum))

    def _renorm_correction(self, mean, variance):
        """Batch renorm's r = sigma_B / sigma_moving and d = (mu_B - mu_moving) / sigma_moving."""
        stddev = ops.sqrt(variance + self.epsilon)
        renorm_stddev = ops.maximum(self.renorm_stddev, ops.sqrt(self.epsilon))
        r = stddev / renorm_stddev
        d = (mean - self.renorm_mean) / renorm_stddev
        clipping = self.renorm_clipping or {}
        if clipping.get("rmin") is not None:
            r = ops.maximum(r, clipping["rmin"])
        if clipping.get("rmax") is not None:
            r = ops.minimum(r, clipping["rmax"])
        if clipping.get("dmax") is not None:
            d = ops.clip(d, -clipping["dmax"], clipping["dmax"])
        return ops.stop_gradient(r), ops.stop_gradient(d)

    def _update_renorm_statistics(self, mean, variance):
        stddev = ops.sqrt(variance + self.epsilon)
        self._assign_moving_average(self.renorm_mean, mean, self.renorm_momentum)
        self._assign_moving_average(self.renorm_stddev, stddev, self.renorm_momentum)
        self._assign_moving_average(self.moving_mean, mean, self.momentum)
        self._assign_moving_average(self.moving_stddev, stddev, self.momentum)
        self.moving_variance.assign(ops.relu(ops.square(self.moving_stddev) - self.epsilon))

    # ----------------------------------------------------------------- helpers
    def _gamma_beta(self):
        """gamma and beta, or 1 and 0 where the layer has none (`scale`/`center` False)."""
        channels = self.moving_mean.shape
        gamma = self.gamma if self.scale else ops.ones(channels)
        beta = self.beta if self.center else ops.zeros(channels)
        return gamma, beta

    def _broadcast(self, v, like):
        """A per-channel vector shaped to broadcast against `like` (x, or x in groups)."""
        shape = [1] * len(like.shape)
        groups_axis = len(like.shape) - (len(self._reduction_axes) + 1)  # 1 for x in groups
        shape[self._channel_axis + groups_axis] = -1
        return ops.reshape(v, shape)

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


# Both BN layers a model may hold: for code that finds them (diagnostics, BN tools).
BN_TYPES = (BatchNormalization, keras.layers.BatchNormalization)


def batch_norm_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every BN layer (ours or Keras') in `model`, nested models included, in order.
    Raises TypeError, in one line, for anything but a Keras model or layer."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"expected a Keras model (or layer), got {type(model).__name__} "
                        f"{model!r:.60}.")
    found = []
    for layer in keras_compat.flatten_layers(model):
        if isinstance(layer, BN_TYPES) and layer not in found:
            found.append(layer)
    return found


def _clone(initializer):
    """A fresh copy of a configured initializer, so two weights do not share a seed."""
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer
