"""The real `tensorboard` server over a log directory, on a free 127.0.0.1 port.

    with tensorboard_server.serve("runs/lenet_custom/tensorboard") as url:
        urllib.request.urlopen(f"{url}/data/plugin/scalars/tags")

Used by the TensorBoard screenshots script and by the tests that read what a user
sees over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@contextlib.contextmanager
def serve(logdir: str, timeout: float = 60.0) -> Iterator[str]:
    """Starts TensorBoard on `logdir`; yields its base URL once it answers; stops it by pid."""
    binary = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    port = free_port()
    proc = subprocess.Popen([binary, f"--logdir={logdir}", "--host=127.0.0.1", f"--port={port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                get_json(f"{url}/data/runs", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"tensorboard did not start on {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def wait_for_runs(url: str, runs: set[str], timeout: float = 60.0) -> dict:
    """The scalar tags by run, once every run in `runs` has some (TensorBoard loads lazily)."""
    deadline = time.time() + timeout
    while True:
        tags = get_json(f"{url}/data/plugin/scalars/tags")
        if runs <= set(tags) or time.time() > deadline:
            return tags
        time.sleep(1)
