"""Test-session setup: two logical CPU devices, so tf.distribute tests have replicas.

The split must happen before TensorFlow initializes its runtime, hence here,
at import time, before any test module runs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
