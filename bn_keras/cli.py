"""Entry-point support for the absl scripts in experiments/ and benchmarks/.

- `quiet_tensorflow()`, called before TensorFlow is imported: no C++ log lines
  (oneDNN notices, "failed call to cuInit", ...) and, in `run`, no INFO lines of
  TensorFlow or TFDS, unless `--verbosity` is 0 or more (absl's own flag: 0 is
  INFO, 1 and up DEBUG).
- `run(main)`: absl.app.run(main) with one line and a non-zero exit for a bad
  flag and for every user error (bn_keras.errors.UserError: anything else is a
  bug and keeps its traceback), written in the script's words: the library names
  fields and arguments (`workdir`, `batch_size=130`), the line names the flags
  (`--workdir`, `--batch_size=130`; `in_flag_words`), progress lines from the `bn_keras` loggers on
  stdout, and Ctrl-C or SIGTERM answered within a moment: a line saying what
  is saved and how to resume, exit status 130 or 143. Everything a run keeps is
  written atomically (a temporary file, then a rename), so stopping at any
  instant loses only the unfinished epoch.

Set BN_KERAS_TRACEBACK=1 to see the full traceback of a user error instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
# Ctrl-C, a polite stop (Kubernetes, Slurm preemption, `docker stop`, systemd) and a
# closed terminal; a stopped script exits 128 + the signal's number, as shells report it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Set by experiments/launch_local_workers.py for its workers: the launcher says, once,
# what was saved, so a worker stops without a line of its own.
LAUNCHED_WORKER = "BN_KERAS_LAUNCHED_WORKER"


def verbosity(argv: list[str]) -> int | None:
    """The value of absl's --verbosity / -v in `argv`, read before flags are parsed."""
    value = None
    for i, arg in enumerate(argv):
        for name in ("--verbosity", "-v"):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    try:
        return None if value is None else int(value)
    except ValueError:
        return None  # absl reports the bad value itself


def quiet_tensorflow(argv: list[str] | None = None) -> None:
    """Hides TensorFlow's C++ log lines unless --verbosity >= 0 asks for them.

    TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it is imported, and its
    libraries log (oneDNN, CUDA stubs) while they load, before that setting
    applies: so TensorFlow is imported here, with its stderr held back. Call
    this before anything imports TensorFlow.
    """
    level = verbosity(sys.argv if argv is None else argv)
    if level is not None and level >= 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if _tensorflow_wanted():
        _import_without_stderr("tensorflow")


def _tensorflow_wanted() -> bool:
    """Whether this process will use TensorFlow: it is installed and Keras' backend is it.

    Scripts that run on any Keras backend (validate_bn, bench_layer) must not import
    TensorFlow under JAX or PyTorch: it may be absent (a GPU machine with no
    TensorFlow), and torch and TensorFlow can crash in one process.
    """
    import importlib.util

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return backend == "tensorflow" and importlib.util.find_spec("tensorflow") is not None


def _import_without_stderr(module: str) -> None:
    """Imports `module` with file descriptor 2 sent to a temporary file, replayed on failure."""
    import importlib
    import tempfile

    if module in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            importlib.import_module(module)
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def configure_logging() -> None:
    """The package's progress lines (loggers under `bn_keras`) go to stdout as they are."""
    logger = logging.getLogger("bn_keras")
    if not any(getattr(h, "bn_keras_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.bn_keras_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # absl's handler on the root logger would print them again


STARTING = "interrupted while starting; nothing was written."


class _Stops:
    """The process's answer to STOP_SIGNALS: what the line says (`describe`)."""

    installed = False
    describe: Callable[[], str] | None = None  # None: the plain "interrupted." line
    starting = True


def answer_stops(describe: Callable[[], str] | None = None, starting: bool = True) -> None:
    """From now on, Ctrl-C (SIGINT), SIGTERM or SIGHUP prints one line and exits at once
    with 128 + the signal's number (130, 143, 129). While `starting`, the line says that
    nothing was written; then `describe()` says what is saved (and the line how to
    resume), or, without it, the line is "interrupted.". Called again, it changes the line.

    Python delivers KeyboardInterrupt only when the main thread next runs Python
    code, which can be many seconds into a TensorFlow call, and SIGTERM kills
    silently. Instead each signal wakes a watcher thread (through
    `signal.set_wakeup_fd`), which answers and ends the process; no file is left
    half-written, as every write is atomic, and the OS releases the work directory's
    lock. Nothing the answer does can stop the exit: a failing `describe` or a closed
    stdout (`| tee`, killed) still exits.
    """
    _Stops.describe, _Stops.starting = describe, starting
    if _Stops.installed:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: None)

    def watch():
        while (signum := os.read(read_fd, 1)[0]) not in STOP_SIGNALS:
            pass
        try:
            if os.environ.get(LAUNCHED_WORKER) != "1":
                print_interrupted(_stopped_line())
        except BaseException:  # noqa: BLE001 - the exit must not depend on it
            pass
        finally:
            os._exit(128 + signum)

    threading.Thread(target=watch, name="interrupt-watcher", daemon=True).start()
    _Stops.installed = True


def _stopped_line() -> str:
    if _Stops.starting:
        return STARTING
    if _Stops.describe is None:
        return "interrupted."
    try:
        saved = _Stops.describe()
    except Exception:  # noqa: BLE001 - the line must not depend on it
        saved = "completed work is saved"
    return resumable_line(saved)


def resumable_line(saved: str) -> str:
    """The line of a stopped command that resumes: what is saved, and how to go on."""
    return f"interrupted: {saved}; run the same command again to resume."


def exit_promptly_on_interrupt(describe: Callable[[], str] | None = None) -> None:
    """`answer_stops` for a command that has started: `describe()` says what is saved."""
    answer_stops(describe, starting=False)


def print_interrupted(line: str) -> None:
    """The line a stopped command prints (what is saved, and how to resume)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # a closed stdout (a pipe whose reader died) must not stop the line
    # At a terminal a progress bar may hold the cursor mid-line: end that line first.
    start = "\n" if sys.stdout.isatty() else ""
    print(f"{start}{line}", file=sys.stderr, flush=True)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported in one line (absl's own report is a
    `FATAL Flags parsing error` line and a hint line)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        sys.exit(f"error: {message} (--help lists every flag)")


def run(main: Callable[[list[str]], None],
        on_interrupt: Callable[[], str] | None = None, exit_on_signal: bool = True,
        positional: bool = False) -> None:
    """absl.app.run(main), turning user errors into one line, and Ctrl-C and SIGTERM into
    one line and exit 130 or 143.

    `on_interrupt()` says what is saved when the command is stopped (without it, the line
    is "interrupted."). A script that answers the signals itself (one that must first
    stop its own child processes) passes `exit_on_signal=False`. Words on the command
    line that are not flags are refused in one line unless `positional` (a script that
    takes them, as the launcher takes train.py's flags after `--`): `--augment False`
    would otherwise turn augmentation on and ignore the "False".
    """
    from absl import app

    def guarded(argv):
        if not positional and len(argv) > 1:
            sys.exit(f"error: unexpected argument {argv[1]!r}: flags take the form "
                     "--name=value (a yes/no flag: --name or --noname); --help lists them.")
        traceback_wanted = bool(os.environ.get("BN_KERAS_TRACEBACK"))
        if traceback_wanted:
            import keras

            keras.config.disable_traceback_filtering()
        if verbosity(sys.argv) is None:
            # absl.app makes INFO the default, which lets TensorFlow's and TFDS' INFO
            # lines through; --verbosity=0 brings them back.
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.WARNING)
        configure_logging()
        if exit_on_signal:
            exit_promptly_on_interrupt(on_interrupt)
        else:
            signal.set_wakeup_fd(-1)  # the script answers the signals itself
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                              else signal.SIG_DFL)
        from bn_keras.errors import UserError

        try:
            main(argv)
        except UserError as e:
            if traceback_wanted:
                raise
            from absl import flags

            sys.exit(f"error: {in_flag_words(str(e), flags.FLAGS)}")

    try:
        app.run(guarded, flags_parser=parse_flags)
    except SystemExit as e:
        # absl exits 1 after printing --help; asking for help is not a failure.
        asked_for_help = any(a.split("=")[0] in HELP_FLAGS for a in sys.argv[1:])
        if asked_for_help and e.code == 1:
            sys.exit(0)
        raise


def in_flag_words(text: str, names: Iterable[str]) -> str:
    """`text` (a library message or help text) with each field or argument it names written
    as the flag that sets it: `name` and name= become --name and --name=, for `names`."""
    names = set(names)

    def flag(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in names:
            return match.group(0)
        return f"--{name}" if match.group(1) else f"--{name}="

    return re.sub(r"`([a-z][a-z0-9_]*)`|(?<![\w.\-/'\"`])([a-z][a-z0-9_]*)=", flag, text)


def define_config_flags(config_class: type, module_name: str | None = None) -> None:
    """One absl flag per field of the dataclass `config_class` (bn_keras.train.config.
    TrainConfig), each with the field's default and its metadata's help text, choices
    and bounds (`setting`): the flags and the configuration cannot drift apart."""
    from absl import flags

    names = [field.name for field in dataclasses.fields(config_class)]
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        kind = field.type.replace(" | None", "")
        args = (field.name, field.default, in_flag_words(meta["help"], names))
        where = {"module_name": module_name or sys.argv[0]}
        bounds = {k: meta[k] for k in ("lower_bound", "upper_bound") if k in meta}
        if "choices" in meta:
            flags.DEFINE_enum(field.name, field.default, list(meta["choices"]), args[2],
                              **where)
        elif kind == "bool":
            flags.DEFINE_bool(*args, **where)
        elif kind == "int":
            flags.DEFINE_integer(*args, **bounds, **where)
        elif kind == "float":
            flags.DEFINE_float(*args, **bounds, **where)
        else:
            flags.DEFINE_string(*args, **where)


def config_from_flags(config_class: type, values: Any, **resolved: Any) -> Any:
    """The `config_class` the parsed flags `values` describe (flags.FLAGS, defined by
    `define_config_flags`); `resolved` overrides fields the script resolves itself."""
    fields = {f.name: values[f.name].value for f in dataclasses.fields(config_class)}
    return config_class(**{**fields, **resolved})


def define_report_flag(script: str) -> None:
    """`--report` for the benchmark `script` (e.g. "bench_layer"): where `run_benchmark`
    also writes its output."""
    from absl import flags

    flags.DEFINE_string("report", None,
                        "Also write the output to this Markdown file, headed by the "
                        "command and what it was measured on (e.g. "
                        f"experiments/results/benchmarks/{script}.md).",
                        module_name=sys.argv[0])  # listed by --helpshort with the script's own


def run_benchmark(title: str, benchmark: Callable[[], None],
                  report_wanted: Callable[[], bool] = lambda: True) -> None:
    """`run` for a benchmark: `benchmark()` prints its tables, and with `--report`
    (`define_report_flag`) they also go to that Markdown file under `title`, the command
    and what it was measured on (bn_keras.testing.timing.report_to). `report_wanted()`
    is False in a process whose output is not the report (e.g. a measuring child)."""
    from absl import flags

    def main(argv: list[str]) -> None:
        del argv
        from bn_keras.testing import timing

        with timing.report_to(flags.FLAGS.report if report_wanted() else None, title):
            benchmark()

    run(main)
