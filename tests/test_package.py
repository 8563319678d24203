"""`import bn_keras`: every sub-package and public name reachable, nothing heavy imported."""

import json

import pytest


@pytest.mark.slow  # starts a process
def test_subpackages_and_names_are_reachable_without_importing_them_first(scripts):
    code = ("import json, sys, bn_keras; "
            "before = 'tensorflow' in sys.modules or 'keras' in sys.modules; "
            "names = dir(bn_keras); "
            "layer = bn_keras.layers.BatchNormalization; "
            "print(json.dumps([before, names, layer.__module__, "
            "bn_keras.models.build_model.__name__, bn_keras.train.TrainConfig.__name__, "
            "bn_keras.serve.__name__, bn_keras.fold_report.__name__]))")
    proc = scripts.run(None, prelude=code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, names, module, build, config, serve, report = json.loads(
        proc.stdout.strip().splitlines()[-1])
    assert before is False  # `import bn_keras` imports neither Keras nor TensorFlow
    assert {"layers", "models", "train", "serve", "data", "study", "testing", "backends",
            "BatchNormalization", "fold_batch_norm", "recalibrate_batch_norm",
            "freeze_batch_norm", "fold_report", "load_model"} <= set(names)
    assert module == "bn_keras.layers.batch_normalization"
    assert (build, config, serve, report) == ("build_model", "TrainConfig", "bn_keras.serve",
                                              "fold_report")


def test_a_name_that_does_not_exist_raises_attribute_error():
    import bn_keras

    with pytest.raises(AttributeError, match="has no attribute 'layerz'"):
        bn_keras.layerz  # noqa: B018
    with pytest.raises(AttributeError, match="'bn_keras.models' has no attribute"):
        bn_keras.models.lenet_cifarr  # noqa: B018
