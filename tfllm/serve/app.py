"""The HTTP side: an ASGI app (Starlette) over an engine (a `Worker` subclass).

    GET  /                     the chat page (tfllm/serve/static/chat.html)
    GET  /health               status and counters (open, for load balancers)
    GET  /v1/models            the served model
    POST /v1/chat/completions  chat (SFT models), plain or streamed (Server-Sent Events)
    POST /v1/completions       text continuation, plain or streamed

With an API key, every /v1 request needs `Authorization: Bearer KEY` (401 otherwise).
Every failure is an OpenAI-style error object, and none stops the server. A client that
disconnects (a closed stream, an aborted fetch, a dropped plain request) cancels its
generation.
"""

import asyncio
import hmac
import importlib.resources

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from tfllm.serve.protocol import (APIError, Limits, Reply, check_model, error_body,
                                  parse_json, parse_messages, parse_prompt, parse_sampling,
                                  sse)
from tfllm.serve.worker import Job

# The page may load nothing from elsewhere and talk only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                               "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# How often a plain (not streamed) request checks that its client is still there.
DISCONNECT_POLL_S = 0.1


def chat_page():
    return importlib.resources.files("tfllm.serve").joinpath("static/chat.html").read_text(
        encoding="utf-8")


class EventStream(StreamingResponse):
    """Server-Sent Events that stop as soon as the client disconnects.

    Starlette's StreamingResponse listens for the disconnect only under ASGI spec
    versions before 2.4; this one always does, and calls `on_close` (which cancels the
    job) when the response ends, whatever the server's spec version.
    """

    media_type = "text/event-stream"

    def __init__(self, content, on_close):
        super().__init__(content, headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            async with anyio.create_task_group() as group:
                async def stream():
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client left while a chunk was being sent
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:  # also when the client left before the first chunk
            self.on_close()


class ApiKeyMiddleware:
    """401 for /v1 requests without `Authorization: Bearer KEY` (ASGI middleware)."""

    def __init__(self, app, api_key):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1") and self.api_key:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    token.strip().encode(), self.api_key.encode()):
                response = JSONResponse(error_body(
                    "a valid API key is needed: send the header 'Authorization: Bearer "
                    "KEY' with the key the server was started with",
                    code="invalid_api_key"), status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_body(request, limits):
    """The request's JSON object; 413 past `limits.max_body_bytes` (checked as it
    arrives, so a large body is never held whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise APIError(413, f"the request body is {declared} bytes, more than the "
                            f"{limits.max_body_bytes} this server takes: send less",
                       code="request_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise APIError(413, f"the request body is more than the "
                                f"{limits.max_body_bytes} bytes this server takes: send "
                                "less", code="request_too_large")
    return parse_json(bytes(raw))


def create_app(engine, api_key=None, limits=None):
    """The ASGI app serving `engine` (a started RunEngine or SavedModelEngine).

    Args:
        engine: the worker that decodes; its `model_id`, `context_length`,
            `chat_refusal`, `chat_prompt` and `completion_prompt` are used.
        api_key: when set, /v1 requests must carry it as a Bearer token.
        limits: a `Limits` (body size, message count).
    """
    limits = limits or Limits()

    async def start_job(request, kind):
        body = await read_body(request, limits)
        check_model(body, engine.model_id)
        if kind == "chat":
            if engine.chat_refusal:
                raise APIError(400, engine.chat_refusal, param="messages",
                               code="model_not_chat")
            payload = parse_messages(body, limits)
        else:
            payload = parse_prompt(body)
        sampling, stream, include_usage = parse_sampling(body, engine.context_length)
        prepare = engine.chat_prompt if kind == "chat" else engine.completion_prompt
        try:  # tokenizing runs TensorFlow: off the event loop
            prompt, count = await asyncio.to_thread(prepare, payload, sampling.max_tokens)
        except ValueError as e:
            raise APIError(400, str(e), param="messages" if kind == "chat" else "prompt",
                           code="context_length_exceeded") from None
        job = Job(kind, prompt, sampling, count, loop=asyncio.get_running_loop())
        engine.submit(job)
        reply = Reply(kind, engine.model_id)
        if stream:
            return EventStream(stream_events(job, reply, include_usage), job.cancel)
        return await whole_reply(request, job, reply)

    async def whole_reply(request, job, reply):
        async def watch():  # a plain request has no stream to notice a disconnect
            while not await request.is_disconnected():
                await asyncio.sleep(DISCONNECT_POLL_S)
            job.cancel()

        watcher = asyncio.create_task(watch())
        pieces = []
        try:
            while True:
                event = await job.events.get()
                if event[0] == "text":
                    pieces.append(event[1])
                elif event[0] == "end":
                    return JSONResponse(reply.whole("".join(pieces), event[1], event[2]))
                elif event[0] == "cancelled":  # nobody is left to read the answer
                    return JSONResponse(error_body("client disconnected"), 499)
                else:
                    raise APIError(500, event[1], type="server_error")
        finally:
            watcher.cancel()
            job.cancel()  # a no-op once the job has ended

    async def stream_events(job, reply, include_usage):
        try:
            yield sse(reply.chunk(first=True) if reply.kind == "chat" else reply.chunk(""))
            while True:
                event = await job.events.get()
                if event[0] == "text":
                    yield sse(reply.chunk(event[1]))
                elif event[0] == "end":
                    yield sse(reply.chunk(finish_reason=event[1]))
                    if include_usage:
                        yield sse(reply.usage_chunk(event[2]))
                    yield sse("[DONE]")
                    return
                elif event[0] == "cancelled":
                    return
                else:
                    yield sse(error_body(event[1], type="server_error"))
                    return
        finally:
            job.cancel()

    async def chat_completions(request):
        return await start_job(request, "chat")

    async def completions(request):
        return await start_job(request, "completion")

    async def models(request):
        return JSONResponse({"object": "list", "data": [{
            "id": engine.model_id, "object": "model", "created": 0, "owned_by": "tfllm",
            "context_length": engine.context_length,
            "chat": engine.chat_refusal is None}]})

    async def health(request):
        return JSONResponse({"status": "ok", "model": engine.model_id,
                             "chat": engine.chat_refusal is None, **engine.snapshot()})

    async def page(request):
        return HTMLResponse(chat_page(), headers=PAGE_HEADERS)

    async def api_error(request, exc):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request, exc):
        return JSONResponse(error_body(f"{exc.detail}: {request.method} {request.url.path}",
                                       code=str(exc.status_code)),
                            status_code=exc.status_code)

    async def server_error(request, exc):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}",
                                       type="server_error"), status_code=500)

    routes = [Route("/", page), Route("/health", health), Route("/v1/models", models),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"])]
    return Starlette(routes=routes,
                     middleware=[Middleware(ApiKeyMiddleware, api_key=api_key)],
                     exception_handlers={APIError: api_error, HTTPException: http_error,
                                         Exception: server_error})
