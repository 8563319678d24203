"""Evidence and measurement: `equivalence` (ours vs Keras' layer vs NumPy, case by case),
`layer_steps` (a layer's training step on any backend), `timing` (side-by-side timing),
`tensorboard_server` (the real TensorBoard, for screenshots and tests)."""
