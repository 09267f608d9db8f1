"""python -m tfllm.serve MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Serves MODEL (a run directory, or a SavedModel version directory) over OpenAI's HTTP API
with a chat page at `/`. The address, the API routes and the page are printed once the
model is loaded and warmed up.
"""

import argparse
import os
import socket
import sys

from tfllm.cli import exit_code, import_tensorflow_quietly
from tfllm.quiet import quiet_stderr
from tfllm.tasks import require

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfllm.serve",
        description="Serve a tfllm model over an OpenAI-compatible HTTP API, with a chat page.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a run directory (runs/NAME) or a SavedModel version "
                   "(saved_models/NAME/VERSION)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (loopback only by default; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--api-key", default=os.environ.get("TFLLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 requests (default: "
                        "$TFLLM_API_KEY, else none)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most requests decoded together")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000,
                   help="largest request body (larger: 413)")
    p.add_argument("--max-messages", type=int, default=256,
                   help="most messages in one chat request (more: 400)")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="seconds to pause after each decoding step of a run directory "
                        "(to watch streaming and stopping; 0 in normal use)")
    return p.parse_args(argv)


def model_kind(path):
    """"saved_model" or "run" by what `path` holds, checked before TensorFlow loads; a
    model of a task that generates no text (a classifier, a translator) is refused."""
    require(path, "serving", lambda task: task.generates)
    return "saved_model" if os.path.exists(os.path.join(path, "saved_model.pb")) else "run"


def open_engine(path, args):
    """The warmed-up, started engine for `path`."""
    if model_kind(path) == "saved_model":
        from tfllm.serve.saved_model import SavedModelEngine

        engine = SavedModelEngine(path, args.max_batch)
    else:
        from tfllm.serve.engine import RunEngine

        engine = RunEngine(path, args.max_batch, step_delay=args.step_delay)
    engine.warm_up()
    engine.start()
    return engine


def bind(host, port):
    """A listening socket, so a taken port is a one-line error before anything loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose "
                         "another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv=None):
    args = parse_args(argv)

    def run():
        for name in ("max_batch", "max_body_bytes", "max_messages"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(args, name)}")
        if args.step_delay < 0:
            raise ValueError(f"--step-delay must be >= 0, got {args.step_delay}")
        model_kind(args.model)
        sock = bind(args.host, args.port)
        import_tensorflow_quietly()
        with quiet_stderr():
            engine = open_engine(args.model, args)
        import uvicorn

        from tfllm.serve.app import create_app
        from tfllm.serve.protocol import Limits

        app = create_app(engine, args.api_key, Limits(args.max_body_bytes, args.max_messages))
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        kind = "chat and completions" if engine.chat_refusal is None else "completions only"
        print(f"serving '{engine.model_id}' ({kind}) on {url}  chat page: {url}/  "
              f"API: {url}/v1", flush=True)
        if args.host not in LOOPBACK and not args.api_key:
            print(f"warning: listening on {args.host} without --api-key: anyone who can "
                  "reach this address can use the model", file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[sock])

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
