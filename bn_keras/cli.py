"""Entry-point support for the absl scripts in experiments/: one clear line on error.

Set BN_KERAS_TRACEBACK=1 to see the full traceback of a user error instead.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

# Errors a user can cause (bad flag values, paths, data); anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError,
               PermissionError)


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main: Callable[[list[str]], None]) -> None:
    """absl.app.run(main), turning user errors and Ctrl-C into one line and exit status."""
    from absl import app

    def guarded(argv):
        if os.environ.get("BN_KERAS_TRACEBACK"):
            import keras

            keras.config.disable_traceback_filtering()
        try:
            main(argv)
        except USER_ERRORS as e:
            if os.environ.get("BN_KERAS_TRACEBACK"):
                raise
            sys.exit(f"error: {e}")
        except KeyboardInterrupt:
            sys.exit("interrupted: completed work is saved; run the same command again to resume.")

    try:
        app.run(guarded)
    except SystemExit as e:
        # absl exits 1 after printing --help; asking for help is not a failure.
        asked_for_help = any(a.split("=")[0] in HELP_FLAGS for a in sys.argv[1:])
        if asked_for_help and e.code == 1:
            sys.exit(0)
        raise
