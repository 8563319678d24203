"""bn_keras.train.distribute: strategies by name and their errors."""

import pytest
import tensorflow as tf

from bn_keras.train import distribute


def test_auto_and_one_device_use_the_cpu_here():
    for name in ("auto", "one_device"):
        strategy = distribute.get_strategy(name)
        assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
        assert strategy.num_replicas_in_sync == 1
        assert distribute.is_chief(strategy)


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
