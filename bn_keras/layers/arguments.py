"""The rules on BatchNormalization's arguments, apart from the layer: checked in its
`__init__`, and by a configuration (bn_keras.train.config) without importing Keras."""

from __future__ import annotations

import numbers

_RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


def check_arguments(axis, renorm, renorm_clipping, synchronized, virtual_batch_size) -> None:
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
