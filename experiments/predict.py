"""Classifies PNG/JPEG images with an exported SavedModel.

    python experiments/predict.py --saved_model=saved_models/lenet_custom/1 cat.png more_images/

Prints, per image, the top classes with their probabilities. The model's
serving_default signature takes raw uint8 pixels and normalizes them itself.
Images of another size are resized to 32x32 as keras.layers.Resizing does
(bilinear), RGBA loses its alpha channel and grayscale becomes RGB, each with a
note on stderr (bn_keras.serve.images says how). A file that cannot be read, or
whose header claims more pixels than bn_keras.serve.images.MAX_PIXELS, is named
with the reason and skipped; the others are still classified, and the exit
status is then 1.
"""

from __future__ import annotations

from bn_keras import cli

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on
cli.quiet_tensorflow()

import os  # noqa: E402
import sys  # noqa: E402

from absl import flags  # noqa: E402

from bn_keras.data import cifar  # noqa: E402
from bn_keras.errors import InvalidSetting, UserError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("saved_model", None, "An exported version directory, e.g. "
                        "saved_models/lenet_custom/1, or the model directory (newest version).",
                        required=True)
    flags.DEFINE_integer("top_k", 3, "Classes to print per image.", lower_bound=1)


def resolve_version(path: str) -> str:
    """A version directory as given, or the newest version inside a model directory."""
    from bn_keras.serve import export

    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        newest = export.next_version(path) - 1
        if newest >= 1:
            return os.path.join(path, str(newest))
    return path


def main(argv):
    paths = argv[1:]
    if not paths:
        raise InvalidSetting("name at least one image file or directory.")
    import numpy as np

    from bn_keras.serve import export, images

    version_dir = resolve_version(FLAGS.saved_model)
    model = export.load_serving_model(version_dir)
    class_names = export.read_metadata(version_dir)["class_names"]
    files, loaded, skipped = [], [], []
    for path in images.find(paths):
        try:
            image, notes = images.load(path, cifar.IMAGE_SHAPE[:2])
        except images.UnreadableImage as e:
            print(f"skipped {e}", file=sys.stderr)
            skipped.append(path)
            continue
        for note in notes:
            print(f"note: {path}: {note}", file=sys.stderr)
        files.append(path)
        loaded.append(image)
    if loaded:
        probabilities = export.serve(model, np.stack(loaded))["probabilities"]
        for path, probs in zip(files, probabilities, strict=True):
            top = np.argsort(probs)[::-1][:FLAGS.top_k]
            print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in top))
    if skipped:
        raise UserError(f"{len(skipped)} of {len(skipped) + len(files)} images could not be "
                        f"read (named above): {', '.join(skipped)}.")


if __name__ == "__main__":
    define_flags()
    cli.run(main, positional=True)
