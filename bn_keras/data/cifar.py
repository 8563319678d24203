"""CIFAR-10's fixed facts: image shape, classes, splits and channel statistics.

Plain Python, no TensorFlow, so the models import on every Keras backend.
"""

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training images, in [0, 1] units.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# "train" is train[:45000], "validation" train[45000:] (model selection),
# "test" the official test set.
SPLITS = {"train": "train[:45000]", "validation": "train[45000:]", "test": "test"}
SPLIT_SIZES = {"train": 45_000, "validation": 5_000, "test": 10_000}
