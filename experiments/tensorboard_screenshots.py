"""PNG screenshots of TensorBoard for the README: per-epoch scalars, BN histograms, gradient norms.

Starts the real `tensorboard` on a free 127.0.0.1 port over --logdir (a run's
tensorboard/ directory), opens each view in headless Chromium (Debian's
`chromium` package: `apt-get install chromium`) and saves one PNG per view in
--output_dir. Not part of CI.

    python experiments/tensorboard_screenshots.py --logdir=runs/lenet_custom/tensorboard \\
        --output_dir=experiments/results/tensorboard
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from absl import flags

from bn_keras import cli
from bn_keras.errors import InvalidSetting, NotFound, UserError

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on

FLAGS = flags.FLAGS
# View name -> the TensorBoard URL fragment that shows it (smoothing off: one point per epoch).
VIEWS = {
    "scalars": "#scalars&_smoothingWeight=0&tagFilter=epoch_(loss|accuracy|learning_rate)",
    "bn_histograms": "#histograms&tagFilter=bn%2Fconv",
    "grad_norms": "#scalars&_smoothingWeight=0&tagFilter=grad_norm",
    "preactivations": "#scalars&_smoothingWeight=0&tagFilter=preactivation_std",
}
# What Chromium needs headless on a machine without a screen, GPU or outside network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def define_flags() -> None:
    flags.DEFINE_string("logdir", None, "A run's TensorBoard directory.", required=True)
    flags.DEFINE_string("output_dir", "runs/screenshots", "Where the PNGs go.")
    flags.DEFINE_string("chromium", "chromium", "The Chromium binary.")
    flags.DEFINE_list("views", list(VIEWS), f"Views to capture: {', '.join(VIEWS)}.")
    flags.DEFINE_integer("width", 1400, "Window width in pixels.", lower_bound=200)
    flags.DEFINE_integer("height", 1000, "Window height in pixels.", lower_bound=200)


def screenshot(chromium: str, url: str, path: str, width: int, height: int) -> None:
    """Renders `url` in headless Chromium (20 s of page time for TensorBoard's scripts)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={width},{height}", "--virtual-time-budget=20000",
                               f"--screenshot={path}", url],
                              capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not os.path.exists(path):
        raise UserError(f"chromium failed on {url}: {proc.stderr.strip()[-300:]}")


def main(argv: list[str]) -> None:
    del argv
    from bn_keras.testing import tensorboard_server

    if shutil.which(FLAGS.chromium) is None:
        raise NotFound(f"no {FLAGS.chromium!r} binary; install Debian's chromium "
                                "package or pass --chromium.")
    if not os.path.isdir(FLAGS.logdir):
        raise NotFound(f"--logdir={FLAGS.logdir!r} is not a directory.")
    unknown = sorted(set(FLAGS.views) - set(VIEWS))
    if unknown:
        raise InvalidSetting(f"unknown --views {unknown}; expected some of {', '.join(VIEWS)}.")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with tensorboard_server.serve(FLAGS.logdir) as url:
        tensorboard_server.wait_for_runs(url, {"train", "validation"})
        for view in FLAGS.views:
            path = os.path.join(FLAGS.output_dir, f"{view}.png")
            screenshot(FLAGS.chromium, f"{url}/{VIEWS[view]}", path, FLAGS.width, FLAGS.height)
            print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
