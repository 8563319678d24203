"""bn_keras.train.distribute: strategies by name and their errors."""

import pytest
import tensorflow as tf

from bn_keras.train import distribute


def test_auto_is_the_default_strategy_and_one_device_the_cpu_here():
    auto = distribute.get_strategy("auto")
    assert auto is tf.distribute.get_strategy() and auto.num_replicas_in_sync == 1
    one = distribute.get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and one.num_replicas_in_sync == 1
    assert distribute.is_chief(auto) and distribute.is_chief(one)


def test_threads_are_set_once_per_process():
    # The test session's TensorFlow runtime has started: the setting in force is kept.
    assert distribute.use_threads(1) == tf.config.threading.get_intra_op_parallelism_threads()


def test_unknown_strategy_lists_the_names():
    with pytest.raises(ValueError, match="strategy='horovod'; expected one of auto, one_device, "
                                         "mirrored, multi_worker_mirrored, tpu"):
        distribute.get_strategy("horovod")


def test_tpu_without_a_tpu_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a TPU address"):
        distribute.get_strategy("tpu")


def test_bad_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not valid multi-worker JSON"):
        distribute.get_strategy("multi_worker_mirrored")
