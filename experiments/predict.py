"""Classifies 32x32 RGB PNG/JPEG images with an exported SavedModel.

    python experiments/predict.py --saved_model=saved_models/lenet_custom/1 cat.png more_images/

Prints, per image, the top classes with their probabilities. The model's
serving_default signature takes raw uint8 pixels and normalizes them itself.
"""

from __future__ import annotations

from bn_keras import cli

cli.quiet_tensorflow()

import os  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def define_flags() -> None:
    flags.DEFINE_string("saved_model", None, "An exported version directory, e.g. "
                        "saved_models/lenet_custom/1, or the model directory (newest version).",
                        required=True)
    flags.DEFINE_integer("top_k", 3, "Classes to print per image.", lower_bound=1)


def image_files(paths: list[str]) -> list[str]:
    """The image files named, and those inside named directories (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path!r}")
    if not files:
        raise ValueError(f"no PNG or JPEG images in {', '.join(paths)}.")
    return files


def read_image(path: str):
    """A uint8 [32, 32, 3] array, or ValueError naming the file and the problem."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        raise ValueError(f"{path}: not a PNG or JPEG image.") from None
    if image.shape != (32, 32, 3):
        raise ValueError(f"{path}: expected a 32x32 RGB image, got {image.shape[1]}x"
                         f"{image.shape[0]} with {image.shape[2]} channel(s).")
    return image


def resolve_version(path: str) -> str:
    """A version directory as given, or the newest version inside a model directory."""
    from bn_keras import export

    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        newest = export.next_version(path) - 1
        if newest >= 1:
            return os.path.join(path, str(newest))
    return path


def main(argv):
    paths = argv[1:]
    if not paths:
        raise ValueError("name at least one image file or directory.")
    import numpy as np

    from bn_keras import export

    version_dir = resolve_version(FLAGS.saved_model)
    loaded = export.load_serving_model(version_dir)
    class_names = export.read_metadata(version_dir)["class_names"]
    files = image_files(paths)
    images = np.stack([read_image(f) for f in files])
    probabilities = export.serve(loaded, images)["probabilities"]
    for path, probs in zip(files, probabilities):
        top = np.argsort(probs)[::-1][:FLAGS.top_k]
        print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in top))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
