"""Our BN on JAX and PyTorch on a GPU: the equivalence grid, layer timings, LeNet training.

One run for a machine with a GPU, JAX and PyTorch; it needs no TensorFlow. For each of
--backends, in a fresh process per backend (Keras picks its backend at import):

1. grid: experiments/validate_bn.py, ours vs that backend's built-in on every
   configuration -> validation_<backend>.md/.csv;
2. layer: benchmarks/bench_layer.py, training step and inference of ours vs
   the built-in -> bench_layer_<backend>.md;
3. lenet: images/s of `model.fit` training LeNet (bn_keras.models.lenet_cifar)
   with no BN, Keras' BN and ours, at each --batch_sizes, on synthetic data
   made on the device (on JAX, Keras' fit copies each batch from host memory:
   its array adapter holds JAX arrays as NumPy) -> lenet_<backend>.json;
4. peer: the tutorial's PyTorch LeNet with its two BN layers actually called,
   trained eagerly on data already on the GPU -> lenet_peer.json (a minimal
   copy of the model; benchmarks/peer_pytorch.py, where present, is the full
   peer benchmark);

then gpu_backends.md, the results table, naming the card. Every part's output
and log lands under --output_dir (logs/), and a failed part is reported in the
table without stopping the others.

On the GPU machine, with Keras 3.15 installed beside JAX and PyTorch (TensorFlow is not
needed), from the repository root:

    pip install keras==3.15.1 absl-py
    PYTHONPATH=$PWD python benchmarks/gpu_backends.py --output_dir=gpu_results \
        --parts=lenet,peer,grid,layer --part_timeout_s=150

What it measured on an H200, and how long each part took there:
experiments/results/gpu_h200/README.md.

On a CPU, --smoke runs every part with tiny sizes in about two minutes, so the
script is known to work before a GPU is spent on it:

    python benchmarks/gpu_backends.py --smoke --output_dir=runs/gpu_smoke
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

from bn_keras import cli
from bn_keras.errors import InvalidSetting

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("grid", "layer", "lenet", "peer")
BN_CHOICES = ("none", "keras", "custom")


def define_flags() -> None:
    flags.DEFINE_string("output_dir", "runs/gpu_backends", "Where every output is written.")
    flags.DEFINE_list("backends", ["jax", "torch"], "Keras backends to run on.")
    flags.DEFINE_list("parts", list(PARTS), f"Parts to run, in this order, of "
                      f"{', '.join(PARTS)}.")
    flags.DEFINE_list("batch_sizes", ["10", "128", "1024"], "LeNet training batch sizes.")
    flags.DEFINE_integer("lenet_steps", 200, "Training steps per timed LeNet epoch.",
                         lower_bound=1)
    flags.DEFINE_integer("lenet_epochs", 3, "LeNet epochs; the first (compilation) is not "
                         "timed, the median of the others is.", lower_bound=2)
    flags.DEFINE_integer("part_timeout_s", 300, "Time limit of each part's process.",
                         lower_bound=1)
    flags.DEFINE_bool("smoke", False, "Tiny sizes everywhere: a check that the script runs.")
    flags.DEFINE_enum("child", None, ["lenet", "peer"], "Internal: run one part in this "
                      "process and write its JSON to --child_output.")
    flags.DEFINE_string("child_output", None, "Internal: the child's JSON file.")


# ------------------------------------------------------------------ measurements
def lenet_images_per_second(bn: str, batch_size: int, steps: int, epochs: int) -> float:
    """Training images/s of LeNet through a plain `model.fit`, median of epochs 2..n."""
    import keras

    from bn_keras import models

    keras.utils.set_random_seed(0)
    images = steps * batch_size
    x = keras.random.uniform((images, 32, 32, 3), seed=0)
    y = keras.ops.cast(keras.random.randint((images,), 0, 10, seed=1), "int32")
    model = models.lenet_cifar(bn)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class EpochTimer(keras.callbacks.Callback):
        """Wall seconds of each epoch (fit turns the logs into numbers: the device is done)."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimer()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[timer])
    return images / statistics.median(timer.seconds[1:])


def peer_images_per_second(batch_size: int, steps: int, epochs: int) -> dict:
    """The tutorial's PyTorch LeNet, BN layers called, trained eagerly on data on the GPU."""
    import torch
    from torch import nn

    class TutorialLeNetWithBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 6, 5), nn.BatchNorm2d(6)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool = nn.MaxPool2d(2)
            self.fc1, self.fc2 = nn.Linear(400, 120), nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)
            self.bn2 = nn.BatchNorm1d(84)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn1(self.conv1(x))))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.relu(self.fc1(torch.flatten(x, 1)))
            x = torch.relu(self.bn2(self.fc2(x)))
            return self.fc3(x)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = TutorialLeNetWithBN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(steps * batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (steps * batch_size,), device=device)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(steps):
            optimizer.zero_grad()
            batch = slice(i * batch_size, (i + 1) * batch_size)
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    return {"device": name, "torch": torch.__version__,
            "images_per_second": steps * batch_size / statistics.median(seconds[1:])}


def run_child(child: str, batch_sizes: list[int], steps: int, epochs: int, output: str) -> None:
    if child == "peer":
        results = {b: peer_images_per_second(b, steps, epochs) for b in batch_sizes}
        report = {"device": results[batch_sizes[0]]["device"],
                  "versions": f"torch {results[batch_sizes[0]]['torch']}",
                  "images_per_second": {"peer": {str(b): r["images_per_second"]
                                                 for b, r in results.items()}}}
    else:
        import keras

        from bn_keras.testing import harness

        report = {"device": harness.current().device_name(),
                  "versions": f"Keras {keras.__version__} on {keras.config.backend()} "
                              f"{_backend_version(keras.config.backend())}",
                  "images_per_second": {bn: {str(b): lenet_images_per_second(bn, b, steps, epochs)
                                             for b in batch_sizes} for bn in BN_CHOICES}}
    with open(output, "w") as f:
        json.dump(report, f, indent=1)


def _backend_version(backend: str) -> str:
    module = __import__(backend)
    return getattr(module, "__version__", "")


# ------------------------------------------------------------------ orchestration
def run_part(command: list[str], backend: str | None, log_path: str, stdout_path: str | None,
             timeout_s: int) -> str:
    """Runs one part in its own process; returns "ok", "failed (exit N)" or "timed out"."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=timeout_s, cwd=ROOT)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        status, out, err = f"timed out after {timeout_s} s", e.stdout or "", e.stderr or ""
        out, err = (t.decode() if isinstance(t, bytes) else t for t in (out, err))
    with open(log_path, "w") as f:
        f.write(f"$ {' '.join(command)}  # KERAS_BACKEND={backend}\n{status}, "
                f"{time.perf_counter() - start:.0f} s\n--- stdout\n{out}\n--- stderr\n{err}")
    if stdout_path is not None and status == "ok":
        with open(stdout_path, "w") as f:
            f.write(out)
    script = " ".join([os.path.relpath(command[1], ROOT), *command[2:3]])
    print(f"{script} [{backend}]: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
    return status


def part_commands(part: str, backend: str, out: str, smoke: bool, batch_sizes: list[str],
                  steps: int, epochs: int) -> tuple[list[str], str | None]:
    """The command of one part on one backend, and the file that keeps its stdout."""
    python = sys.executable
    if part == "grid":
        extra = ["--quick", "--timing_iterations=2"] if smoke else []
        return [python, os.path.join(ROOT, "experiments", "validate_bn.py"),
                f"--output_dir={out}", *extra], None
    if part == "layer":
        extra = (["--shapes=16x8x8x16,32x120", "--rounds=1", "--iterations=2",
                  "--steps_per_call=2"] if smoke else [])
        return ([python, os.path.join(ROOT, "benchmarks", "bench_layer.py"), *extra],
                os.path.join(out, f"bench_layer_{backend}.md"))
    child = "peer" if part == "peer" else "lenet"
    name = "peer" if part == "peer" else backend
    return [python, os.path.abspath(__file__), f"--child={child}",
            f"--child_output={os.path.join(out, f'lenet_{name}.json')}",
            f"--batch_sizes={','.join(batch_sizes)}", f"--lenet_steps={steps}",
            f"--lenet_epochs={epochs}"], None


def results_table(out: str, backends: list[str], statuses: dict, batch_sizes: list[str],
                  command: str) -> str:
    """gpu_backends.md: what ran where, the equivalence verdicts, LeNet images/s, layer tables."""
    lenet = {}
    for name in [*backends, "peer"]:
        path = os.path.join(out, f"lenet_{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                lenet[name] = json.load(f)
    lines = ["# Our BatchNormalization on JAX and PyTorch, on the GPU", "",
             f"Command: `{command}`", ""]
    for name, report in lenet.items():
        lines.append(f"- {name}: {report['device']}, {report['versions']}")
    lines += ["", "## Parts", "", "| part | " + " | ".join(backends) + " |",
              "|---|" + "---|" * len(backends)]
    for part in PARTS:
        lines.append(f"| {part} | " + " | ".join(statuses.get((part, b), "-") for b in backends)
                     + " |")
    lines += ["", "## Equivalence (ours vs the backend's built-in)", ""]
    for backend in backends:
        path = os.path.join(out, f"validation_{backend}.md")
        verdict = "not run"
        if os.path.exists(path):
            with open(path) as f:
                verdict = next((line for line in f if "configurations pass" in line),
                               "no verdict").strip()
        lines.append(f"- {backend}: {verdict.split('. ')[0]} ([report](validation_{backend}.md))")
    lines += ["", "## LeNet training, images/s", "",
              "`model.fit`, Adam, synthetic CIFAR-shaped data; median epoch after the first. "
              "Higher is faster: ours / keras above 1 means ours trains faster.", "",
              "| backend | BN | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |",
              "|---|---|" + "---|" * len(batch_sizes)]
    for backend in backends:
        ips = lenet.get(backend, {}).get("images_per_second", {})
        for bn in BN_CHOICES:
            if bn in ips:
                lines.append(f"| {backend} | {bn} | "
                             + " | ".join(f"{ips[bn][b]:,.0f}" for b in batch_sizes) + " |")
        if "keras" in ips and "custom" in ips:
            lines.append(f"| {backend} | ours / keras | " + " | ".join(
                f"{ips['custom'][b] / ips['keras'][b]:.2f}x" for b in batch_sizes) + " |")
    if "peer" in lenet:
        peer = lenet["peer"]["images_per_second"]["peer"]
        lines.append("| PyTorch (tutorial's LeNet + BN, eager) | peer | "
                     + " | ".join(f"{peer[b]:,.0f}" for b in batch_sizes) + " |")
    lines += ["", "## Layer timings (benchmarks/bench_layer.py)", ""]
    for backend in backends:
        path = os.path.join(out, f"bench_layer_{backend}.md")
        if os.path.exists(path):
            with open(path) as f:
                lines += [f"### {backend}", "", f.read().strip(), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    batch_sizes = ["8", "16"] if FLAGS.smoke else FLAGS.batch_sizes
    steps, epochs = (4, 2) if FLAGS.smoke else (FLAGS.lenet_steps, FLAGS.lenet_epochs)
    if FLAGS.child:
        run_child(FLAGS.child, [int(b) for b in batch_sizes], steps, epochs, FLAGS.child_output)
        return
    unknown = sorted(set(FLAGS.parts) - set(PARTS))
    if unknown:
        raise InvalidSetting(f"--parts: unknown {unknown}; expected some of {', '.join(PARTS)}.")
    out = os.path.abspath(FLAGS.output_dir)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    statuses = {}
    for part in dict.fromkeys(FLAGS.parts):  # in the order given: the most wanted first
        for backend in FLAGS.backends if part != "peer" else ["torch"]:
            command, stdout_path = part_commands(part, backend, out, FLAGS.smoke, batch_sizes,
                                                 steps, epochs)
            statuses[(part, backend)] = run_part(
                command, backend, os.path.join(out, "logs", f"{part}_{backend}.log"),
                stdout_path, FLAGS.part_timeout_s)
    table = results_table(out, FLAGS.backends, statuses, batch_sizes,
                          "python " + " ".join(["benchmarks/gpu_backends.py", *sys.argv[1:]]))
    with open(os.path.join(out, "gpu_backends.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"wrote {out}/gpu_backends.md")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
