"""Helpers for tests that start training processes: free ports, process groups that are
killed on failure, and the loss lines a run prints."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import ROOT

STEP_LINE = re.compile(r"step (\d+)/\d+: loss ([\d.]+)")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start(args, cwd, log_path, env=None):
    """Start `python args...` in its own process group, output to `log_path`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log_path
    log.close()
    return process


def kill(process):
    """SIGKILL the process and its children."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def wait_all(processes, timeout):
    """Wait for every process to end within `timeout` seconds in all; kills them all if
    one fails or time runs out. Returns their outputs."""
    deadline = time.time() + timeout
    try:
        while any(p.poll() is None for p in processes):
            if time.time() > deadline:
                raise TimeoutError(f"training processes still running after {timeout}s")
            if any(p.poll() not in (None, 0) for p in processes):
                break  # one failed: the others would wait for it forever
            time.sleep(0.2)
    finally:
        for p in processes:
            kill(p)
    return [open(p.log_path).read() for p in processes]


def step_losses(output):
    """{step: loss string} from the lines a non-interactive run prints."""
    return {int(s): loss for s, loss in STEP_LINE.findall(output)}
