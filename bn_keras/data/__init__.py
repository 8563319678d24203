"""CIFAR-10 and synthetic data: where examples come from (`sources`), how they are served
(`pipelines`), and CIFAR-10's fixed facts (`cifar`, which needs no TensorFlow)."""
