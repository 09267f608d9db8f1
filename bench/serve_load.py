"""Load on `python -m tfllm.serve`: requests/s and latency with 1, 4 and 16 clients.

    python bench/serve_load.py runs/tiny-sft [--requests 48] [--max-tokens 32]
    python bench/serve_load.py --url http://127.0.0.1:8000 [--api-key KEY]

Starts the server on a free loopback port (or uses the one at --url), then sends the same
requests (different greedy chat questions, or completions for a model that cannot chat)
first one at a time, then from 4 and from 16 concurrent clients. Prints requests/s,
p50/p95 latency, the speed-up over one at a time, the mean decoding batch (requests
per batch the server ran),
and whether every concurrent reply equals its one-at-a-time reply.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = (1, 4, 16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="run directory or SavedModel version to serve")
    p.add_argument("--url", help="a running server instead of starting one")
    p.add_argument("--api-key", default=None)
    p.add_argument("--requests", type=int, default=48, help="requests per setting")
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args(argv)
    if not (args.model or args.url):
        p.error("give MODEL or --url")
    return args


class Client:
    def __init__(self, url, api_key=None):
        self.url, self.api_key = urllib.parse.urlsplit(url), api_key

    def call(self, method, path, body=None):
        connection = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=600)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        connection.request(method, path, json.dumps(body) if body else None, headers)
        response = connection.getresponse()
        data = json.loads(response.read())
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data}")
        return data


def make_requests(chat, n, max_tokens):
    if chat:
        return [("/v1/chat/completions", {
            "messages": [{"role": "user", "content": f"What colour is thing {i}?"}],
            "max_tokens": max_tokens, "temperature": 0}) for i in range(n)]
    return [("/v1/completions", {"prompt": f"Thing {i} is", "max_tokens": max_tokens,
                                 "temperature": 0}) for i in range(n)]


def reply_text(data):
    choice = data["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def run(client, requests, clients):
    """(wall seconds, latencies, replies) for `requests` sent by `clients` threads."""
    def one(request):
        start = time.perf_counter()
        data = client.call("POST", *request)
        return time.perf_counter() - start, reply_text(data)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, requests))
    return time.perf_counter() - start, [r[0] for r in results], [r[1] for r in results]


def percentile(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def start_server(model):
    env = {**os.environ, "PYTHONPATH": ROOT}
    process = subprocess.Popen([sys.executable, "-m", "tfllm.serve", model, "--port", "0"],
                               stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("serving "):
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, line.split(" on ", 1)[1].split()[0]


def main(argv=None):
    args = parse_args(argv)
    process, url = (None, args.url) if args.url else start_server(args.model)
    try:
        client = Client(url, args.api_key)
        model = client.call("GET", "/v1/models")["data"][0]
        requests = make_requests(model.get("chat", False), args.requests, args.max_tokens)
        run(client, requests[:4], 4)  # warm-up: the first requests pay for lazy set-up
        print(f"model {model['id']} (context {model['context_length']}), "
              f"{len(requests)} {requests[0][0]} requests, max_tokens {args.max_tokens}, "
              "greedy\n")
        print("| clients | requests/s | p50 latency (s) | p95 latency (s) | speed-up | "
              "mean batch | replies equal one-at-a-time |")
        print("|---|---|---|---|---|---|---|")
        baseline = None
        for clients in CLIENTS:
            batches = client.call("GET", "/health")["batches"]
            wall, latencies, replies = run(client, requests, clients)
            batches = client.call("GET", "/health")["batches"] - batches
            rate = len(requests) / wall
            baseline = baseline or (rate, replies)
            print(f"| {clients} | {rate:.1f} | {percentile(latencies, 50):.3f} | "
                  f"{percentile(latencies, 95):.3f} | {rate / baseline[0]:.2f}x | "
                  f"{len(requests) / batches:.1f} | "
                  f"{'yes' if replies == baseline[1] else 'NO'} |", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
