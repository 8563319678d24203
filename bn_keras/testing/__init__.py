"""Evidence and measurement: `equivalence` (ours vs Keras' layer vs NumPy, case by case),
`synchronized` (N replicas vs one device on the concatenated batch, every backend),
`layer_steps` (a layer's training step on any backend), `timing` (side-by-side timing),
`tensorboard_server` (the real TensorBoard, for screenshots and tests)."""
