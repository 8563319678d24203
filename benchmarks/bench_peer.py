"""Training images/s of experiments/train.py vs the BN tutorial's PyTorch peer, side by side.

Each measurement is a fresh process: the real `experiments/train.py` on synthetic
CIFAR-shaped data with every default callback on (TensorBoard, BN diagnostics at
their default period, checkpoints, backup, CSV log; its progress bar writes to a
pipe), and `benchmarks/peer_pytorch.py`, the tutorial's plain PyTorch loop with BN
wired in where ours sits. They alternate, case after case, round after round
(`bn_keras.testing.timing.interleaved`), so machine drift hits both alike.

A process's figure is its best epoch after the first (the first includes tracing
and warm-up; on a shared machine noise only slows an epoch down). Ours is read
from train.py's own metrics.csv: images/s from the epoch's start to its last
training step, every per-step callback included, the epoch-end validation and
checkpoint not (the peer's epochs hold only training too). Tables give the median
over rounds and the min-max; the ratio is the median of the per-round ratios, each
from two processes run back to back.

Targets: ours >= 1.5x the peer at batch 10 and >= 1.3x at batch 128
(LeNet with BN), ResNet-20 >= 1.0x at batch 128; our BN LeNet <= 1.2x the time of
our no-BN LeNet. A verdict is printed only where the rounds agree within MAX_SPREAD.
Needs PyTorch: pip install -e '.[peer]'.

Run it on an otherwise idle machine. With other work on the 2 cores (load average
about 5), torch's default threads (OpenMP, one per core) made the peer's LeNet at
batch 10 run anywhere from 160 to 4,679 img/s while train.py stayed within 725-1,153:
loaded-machine ratios flatter ours. The header prints the load average.

    python benchmarks/bench_peer.py                      # everything, about 10-15 min
    python benchmarks/bench_peer.py --models=lenet --batch_sizes=10 --rounds=1
    python benchmarks/bench_peer.py --train_flag=--steps_per_execution=8
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping

from absl import flags

from bn_keras import cli
from bn_keras.errors import InvalidSetting
from bn_keras.testing import timing

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(ROOT, "experiments", "train.py")
PEER_SCRIPT = os.path.join(ROOT, "benchmarks", "peer_pytorch.py")
# The per-epoch throughput column that bn_keras.train.training writes to metrics.csv.
IMAGES_PER_SECOND_COLUMN = "images_per_second"
MISSING_TORCH = "PyTorch is not installed; pip install -e '.[peer]'"
MODEL_NAMES = {"lenet": "LeNet", "resnet20": "ResNet-20"}
EXAMPLES_FLAGS = {"lenet": "lenet_examples", "resnet20": "resnet_examples"}
# The tutorial's optimizer for LeNet (Adam, lr 1e-4); the paper's for ResNet-20.
OPTIMIZERS = {"lenet": ("adam", 1e-4), "resnet20": ("sgd", 0.1)}
SIDES = ("ours", "peer")


@dataclasses.dataclass(frozen=True)
class Case:
    """One table row: a network, with or without BN, at one batch size."""

    model: str
    bn: bool
    batch_size: int

    @property
    def label(self) -> str:
        return f"{MODEL_NAMES[self.model]} {'BN' if self.bn else 'no BN'}"


# Minimum ours/peer images/s ratio; rows without an entry have no target.
SPEED_TARGETS = {Case("lenet", True, 10): 1.5, Case("lenet", True, 128): 1.3,
                 Case("resnet20", True, 128): 1.0}
# A verdict needs rounds that agree: the largest per-round ratio over the smallest at most
# this much above 1. On 2 shared cores PyTorch's threads collapse beside any other process
# (the same peer measured 581 and 1,800 images/s), and one disturbed round flips a verdict.
MAX_SPREAD = 0.15
# Maximum time of our BN LeNet over our no-BN LeNet, at every batch size.
BN_COST_TARGET = 1.2


def select_cases(models: list[str], batch_sizes: list[int], resnet_batch_sizes: list[int],
                 lenet_nobn: bool) -> list[Case]:
    """The rows to measure: LeNet with (and without) BN at each batch size, ResNet-20 with BN."""
    cases = []
    if "lenet" in models:
        for bn in (True, False) if lenet_nobn else (True,):
            cases += [Case("lenet", bn, b) for b in batch_sizes]
    if "resnet20" in models:
        cases += [Case("resnet20", True, b) for b in resnet_batch_sizes]
    return cases


def steady_state(images_per_second: list[float]) -> float:
    """A process's figure: its best epoch after the first."""
    if len(images_per_second) < 2:
        raise InvalidSetting(f"need at least 2 epochs to skip the first, got {images_per_second}.")
    return max(images_per_second[1:])


def read_images_per_second(metrics_csv: str) -> list[float]:
    """The per-epoch training images/s that train.py wrote to `metrics_csv`."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    if rows and IMAGES_PER_SECOND_COLUMN not in rows[0]:
        raise InvalidSetting(f"{metrics_csv} has no {IMAGES_PER_SECOND_COLUMN!r} column "
                         f"(columns: {', '.join(rows[0])}); update IMAGES_PER_SECOND_COLUMN.")
    return [float(row[IMAGES_PER_SECOND_COLUMN]) for row in rows]


def ours_command(case: Case, examples: int, epochs: int, workdir: str, bn: str,
                 extra_flags: list[str]) -> list[str]:
    optimizer, learning_rate = OPTIMIZERS[case.model]
    return [sys.executable, TRAIN_SCRIPT, "--dataset=synthetic",
            f"--synthetic_examples={examples}", f"--model={case.model}",
            f"--bn={bn if case.bn else 'none'}", f"--batch_size={case.batch_size}",
            f"--epochs={epochs}", f"--optimizer={optimizer}", f"--learning_rate={learning_rate}",
            f"--workdir={workdir}", *extra_flags]


def peer_command(case: Case, examples: int, epochs: int, threads: int | None) -> list[str]:
    optimizer, _ = OPTIMIZERS[case.model]
    command = [sys.executable, PEER_SCRIPT, f"--model={case.model}",
               "--bn" if case.bn else "--nobn", f"--batch_size={case.batch_size}",
               f"--examples={examples}", f"--epochs={epochs}", f"--optimizer={optimizer}"]
    return command + ([f"--threads={threads}"] if threads else [])


def run_process(command: list[str]) -> str:
    """Runs `command` with this checkout's bn_keras first on the path; returns its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    return done.stdout


@dataclasses.dataclass
class SpeedRow:
    """Per-round images/s of ours and the peer for one case."""

    case: Case
    ours: list[float]
    peer: list[float]

    @property
    def ratios(self) -> list[float]:
        return [o / p for o, p in zip(self.ours, self.peer, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def target(self) -> float | None:
        return SPEED_TARGETS.get(self.case)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    @property
    def verdict(self) -> str:
        return _verdict(self.met, self.ratios)


@dataclasses.dataclass
class BNCostRow:
    """Per-round time of BN LeNet over no-BN LeNet at one batch size, ours and the peer's."""

    batch_size: int
    ours: list[float]
    peer: list[float]

    @property
    def met(self) -> bool:
        return statistics.median(self.ours) <= BN_COST_TARGET

    @property
    def verdict(self) -> str:
        return _verdict(self.met, self.ours)


def speed_rows(samples: Mapping[Case, Mapping[str, list[float]]]) -> list[SpeedRow]:
    return [SpeedRow(case, list(s["ours"]), list(s["peer"])) for case, s in samples.items()]


def bn_cost_rows(samples: Mapping[Case, Mapping[str, list[float]]]) -> list[BNCostRow]:
    """For each batch size with both LeNets measured: no-BN img/s / BN img/s per round."""
    rows = []
    for case in samples:
        without = Case("lenet", False, case.batch_size)
        if case.model != "lenet" or not case.bn or without not in samples:
            continue
        cost = {side: [n / b for n, b in zip(samples[without][side], samples[case][side],
                                             strict=True)] for side in SIDES}
        rows.append(BNCostRow(case.batch_size, cost["ours"], cost["peer"]))
    return rows


def _verdict(met: bool | None, ratios: list[float]) -> str:
    """yes or NO, where the rounds agree (see MAX_SPREAD); else why there is none."""
    if met is None:
        return "-"
    if len(ratios) < 2:
        return "none: one round (2+ needed)"
    spread = max(ratios) / min(ratios) - 1
    if spread > MAX_SPREAD:
        return f"none: rounds differ by {spread:.0%} (over {MAX_SPREAD:.0%})"
    return "yes" if met else "NO"


def _figure(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({timing.spread(values, ',.0f')})"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({timing.spread(values, '.2f')})"


def format_tables(samples: Mapping[Case, Mapping[str, list[float]]]) -> str:
    """The speed table and, where both LeNets ran, the BN-cost table, as Markdown."""
    lines = ["| network | batch | ours img/s median (min-max) | peer img/s median (min-max) "
             "| ours / peer | target | met |", "|---|---|---|---|---|---|---|"]
    for row in speed_rows(samples):
        target = "-" if row.target is None else f">= {row.target}x"
        lines.append(f"| {row.case.label} | {row.case.batch_size} | {_figure(row.ours)} | "
                     f"{_figure(row.peer)} | {_ratio(row.ratios)} | {target} | "
                     f"{row.verdict} |")
    cost_rows = bn_cost_rows(samples)
    if cost_rows:
        lines += ["", "| batch | ours: BN LeNet time / no-BN time | peer, for reference "
                  "| target | met |", "|---|---|---|---|---|"]
        lines += [f"| {row.batch_size} | {_ratio(row.ours)} | {_ratio(row.peer)} | "
                  f"<= {BN_COST_TARGET}x | {row.verdict} |" for row in cost_rows]
    return "\n".join(lines)


def measure(cases: list[Case], examples: Callable[[Case], int], epochs: int, rounds: int,
            bn: str, train_flags: list[str], torch_threads: int | None,
            workdir: str) -> tuple[dict[Case, dict[str, list[float]]], dict]:
    """Runs every case's two processes, interleaved; returns per-round img/s and peer facts."""
    peer_facts: dict = {}
    runs = itertools.count()

    def ours(case: Case) -> float:
        run_dir = os.path.join(workdir, f"run{next(runs)}")
        start = time.perf_counter()
        run_process(ours_command(case, examples(case), epochs, run_dir, bn, train_flags))
        value = steady_state(read_images_per_second(os.path.join(run_dir, "metrics.csv")))
        _progress(case, "ours", value, time.perf_counter() - start)
        return value

    def peer(case: Case) -> float:
        start = time.perf_counter()
        output = run_process(peer_command(case, examples(case), epochs, torch_threads))
        result = json.loads(output.strip().splitlines()[-1])
        peer_facts.update(torch=result["torch"], threads=result["threads"])
        value = steady_state(result["images_per_second"])
        _progress(case, "peer", value, time.perf_counter() - start)
        return value

    measures = {(case, side): (lambda c=case, f=fn: f(c))
                for case in cases for side, fn in (("ours", ours), ("peer", peer))}
    flat = timing.interleaved(measures, rounds, warmup=0)
    samples = {case: {side: flat[(case, side)] for side in SIDES} for case in cases}
    return samples, peer_facts


def _progress(case: Case, side: str, value: float, seconds: float) -> None:
    print(f"  {case.label}, batch {case.batch_size}, {side}: {value:,.0f} img/s "
          f"(process {seconds:.0f} s)", file=sys.stderr, flush=True)


def define_flags() -> None:
    cli.define_report_flag("bench_peer")
    flags.DEFINE_list("models", list(MODEL_NAMES), f"Networks to measure: "
                      f"{', '.join(MODEL_NAMES)}.")
    flags.DEFINE_list("batch_sizes", ["10", "128"], "LeNet batch sizes.")
    flags.DEFINE_list("resnet_batch_sizes", ["128"], "ResNet-20 batch sizes.")
    flags.DEFINE_bool("lenet_nobn", True, "Also measure LeNet without BN (and BN's cost).")
    flags.DEFINE_integer("rounds", 3, "Interleaved rounds; each runs every process once.",
                         lower_bound=1)
    flags.DEFINE_integer("epochs", 3, "Epochs per process; the first is not counted.",
                         lower_bound=2)
    flags.DEFINE_integer("lenet_examples", 25_600, "Synthetic training images per LeNet epoch "
                         "(a multiple of every batch size).", lower_bound=1)
    flags.DEFINE_integer("resnet_examples", 3_840, "Synthetic training images per ResNet-20 "
                         "epoch (a multiple of every batch size).", lower_bound=1)
    flags.DEFINE_enum("bn", "custom", ["custom", "keras"], "Our BN: custom (ours) or keras.")
    flags.DEFINE_multi_string("train_flag", [], "An extra flag for train.py, e.g. "
                              "--train_flag=--steps_per_execution=8 (repeatable).")
    flags.DEFINE_integer("torch_threads", None, "The peer's torch.set_num_threads "
                         "(default: torch's own).", lower_bound=1)


def _batch_sizes(values: list[str], flag: str) -> list[int]:
    try:
        sizes = [int(v) for v in values]
    except ValueError:
        raise InvalidSetting(f"--{flag}={','.join(values)}: expected integers.") from None
    if any(size < 2 for size in sizes):
        raise InvalidSetting(f"--{flag}={','.join(values)}: batch sizes must be at least 2.")
    return sizes


def benchmark() -> None:
    if importlib.util.find_spec("torch") is None:
        raise InvalidSetting(MISSING_TORCH)
    f = flags.FLAGS
    unknown = sorted(set(f.models) - set(MODEL_NAMES))
    if unknown:
        raise InvalidSetting(f"--models: unknown {', '.join(unknown)}; expected some of "
                         f"{', '.join(MODEL_NAMES)}.")
    cases = select_cases(f.models, _batch_sizes(f.batch_sizes, "batch_sizes"),
                         _batch_sizes(f.resnet_batch_sizes, "resnet_batch_sizes"), f.lenet_nobn)
    if not cases:
        raise InvalidSetting("nothing to measure: --models and the batch sizes select no case.")
    examples = {model: f[flag].value for model, flag in EXAMPLES_FLAGS.items()}
    for case in cases:
        if examples[case.model] % case.batch_size:
            raise InvalidSetting(f"--{EXAMPLES_FLAGS[case.model]}={examples[case.model]} is not a "
                             f"multiple of batch size {case.batch_size}: both sides must run "
                             "full batches only.")
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="bench_peer_") as workdir:
            samples, peer_facts = measure(cases, lambda c: examples[c.model], f.epochs,
                                          f.rounds, f.bn, f.train_flag, f.torch_threads, workdir)
    except KeyboardInterrupt:
        sys.exit("interrupted: no table (a partial set of rounds is not kept).")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}"
                         for name in ("tensorflow", "keras"))
    sizes = " / ".join(f"{examples[m]:,} {MODEL_NAMES[m]}"
                       for m in MODEL_NAMES if any(c.model == m for c in cases))
    print(f"\n{os.cpu_count()} CPU cores; ours: train.py, bn={f.bn}, {versions}"
          f"{', ' + ' '.join(f.train_flag) if f.train_flag else ''}; peer: torch "
          f"{peer_facts['torch']} (threads: {peer_facts['threads']}). Synthetic data, {sizes} "
          f"images per epoch, {f.epochs} epochs per process, best epoch after the first; "
          f"{f.rounds} interleaved round(s): median (min-max); ratios are medians of "
          f"per-round ratios. 1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after: above ~0.5 other work shared the cores.\n")
    print(format_tables(samples))


TITLE = "experiments/train.py vs the tutorial's PyTorch loop (benchmarks/bench_peer.py)"

if __name__ == "__main__":
    define_flags()
    cli.run_benchmark(TITLE, benchmark)
