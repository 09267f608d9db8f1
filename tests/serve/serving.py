"""Real servers (`python -m tfllm.serve` on loopback ports) over the session's tiny run.

Test modules import these fixtures (a conftest.py here would shadow tests/conftest.py,
which other tests import as `conftest`). The servers start once per session, whichever
module asks first.

The chat server needs an SFT model; what it does with one does not depend on what the
weights learned, so the SFT models here are copies of the tiny pretraining run (and of
its SavedModel) recorded as `--task sft` runs: seconds instead of a fine-tuning run.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

API_KEY = "sk-test-key"
STARTUP_S = 240


class Server:
    """`python -m tfllm.serve MODEL --port 0 ARGS` in a subprocess; `url` once it says
    where it listens."""

    def __init__(self, model, *args):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("TFLLM_API_KEY", None)
        # stderr to a file: a pipe nobody reads could fill up and block the server.
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfllm.serve", str(model), "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=ROOT)
        self.url = None

    def wait_ready(self):
        deadline = time.time() + STARTUP_S
        line = self.process.stdout.readline()  # the "serving ..." line, after warm-up
        if not line.startswith("serving ") or time.time() > deadline:
            self.process.kill()
            self.process.wait()
            self.stderr.seek(0)
            raise AssertionError(f"the server did not start: {line!r}\n"
                                 f"{self.stderr.read().decode(errors='replace')[-3000:]}")
        self.line = line
        self.url = line.split(" on ", 1)[1].split()[0]
        return self

    @property
    def api(self):
        return f"{self.url}/v1"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def as_sft(src, dst):
    """A copy of run directory `src` at `dst`, recorded as an SFT run."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tensorboard"))
    path = dst / "train_config.json"
    options = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    path.write_text(json.dumps({**options, "task": "sft"}), encoding="utf-8")
    return dst


def saved_model_as_sft(src, dst):
    """A copy of SavedModel version `src` at `dst`, its metadata naming an SFT run."""
    shutil.copytree(src, dst)
    path = dst / "assets.extra" / "tfllm.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["train_options"] = {**(meta.get("train_options") or {}), "task": "sft"}
    path.write_text(json.dumps(meta), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def sft_run(trained_run, tmp_path_factory):
    return as_sft(trained_run[1], tmp_path_factory.mktemp("serve") / "tiny-sft")


_SERVERS = {}  # started once per session, shared by every module that imports `servers`


@pytest.fixture(scope="session")
def servers(trained_run, sft_run, tmp_path_factory):
    """Four servers started together (their start-ups overlap):
    main:  the SFT run, with an API key and small limits for the bad-request tests;
    slow:  the SFT run, 50 ms per decoding step (to stop replies mid-way);
    saved: the SFT SavedModel;
    lm:    the plain language-model run."""
    if _SERVERS:
        yield _SERVERS
        return
    saved = saved_model_as_sft(trained_run[2],
                               tmp_path_factory.mktemp("saved") / "tiny-sft" / "1")
    started = {
        "main": Server(sft_run, "--api-key", API_KEY, "--max-body-bytes", 20000,
                       "--max-messages", 8),
        "slow": Server(sft_run, "--step-delay", 0.05),
        "saved": Server(saved),
        "lm": Server(trained_run[1]),
    }
    try:
        _SERVERS.update({name: server.wait_ready() for name, server in started.items()})
        yield _SERVERS
    finally:
        for server in started.values():
            server.stop()
        _SERVERS.clear()


def raw(server, method, path, body=None, headers=None, key=API_KEY):
    """(status, parsed JSON or text) of one plain HTTP request."""
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    headers = {"Content-Type": "application/json", **(headers or {})}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode("utf-8")
    connection.close()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, text


def health(server):
    return raw(server, "GET", "/health", key=None)[1]


def wait_idle(server, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = health(server)
        if state["active"] == 0 and state["queued"] == 0:
            return state
        time.sleep(0.05)
    raise AssertionError(f"the server is still busy: {health(server)}")
