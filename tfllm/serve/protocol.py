"""OpenAI's request and response shapes: checking requests, building replies and errors.

Requests follow OpenAI's schema (https://platform.openai.com/docs/api-reference/chat):
`messages` (or `prompt`), `max_tokens` (or `max_completion_tokens`), `temperature`
(default 1, as OpenAI's), `top_p`, `seed`, `stop` (a string or up to 4), `stream`,
`stream_options.include_usage` and `n` (1 only); `top_k` is accepted as an extension.
Unknown fields are ignored, as OpenAI-compatible servers do. Errors are OpenAI's error
object, `{"error": {"message", "type", "param", "code"}}`, with a 4xx status.

Plain Python: the SavedModel server imports no model code.
"""

import dataclasses
import json
import random
import time
import uuid

from tfllm.serve.worker import Sampling
from tfllm.tasks import get_task

MAX_STOP = 4  # OpenAI's limit on `stop` strings


@dataclasses.dataclass
class Limits:
    """What one request may ask for; more is answered 413 (body) or 400 (the rest)."""

    max_body_bytes: int = 1_000_000
    max_messages: int = 256


class APIError(Exception):
    """A request the server answers with an OpenAI-style error object."""

    def __init__(self, status, message, param=None, code=None,
                 type="invalid_request_error"):
        super().__init__(message)
        self.status, self.message = status, message
        self.param, self.code, self.type = param, code, type

    def body(self):
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message, type="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def chat_refusal(model_id, task_name, can_chat):
    """Why a model cannot chat (None when it can): chat needs a model of a task that
    trains the chat format (the registry's `chats`: train.py --task sft) whose export or
    tokenizer has the chat markers."""
    task = get_task(task_name)
    if task.chats and can_chat:
        return None
    kind = task.model_kind + (" without chat markers in its tokenizer" if task.chats else "")
    return (f"model '{model_id}' is {kind} (task {task.name}), not a chat model: use "
            "/v1/completions, or serve a model fine-tuned with train.py --task sft")


def cut_at_stop(text, stop):
    """`text` up to the earliest of the `stop` strings: the rule of
    `tfllm.generation.cut_at_stop`, here without importing the model code."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


def default_max_tokens(context_length):
    """A request without max_tokens gets 128 tokens, at most half the context."""
    return max(1, min(128, context_length // 2))


# --- checking a request ------------------------------------------------------------------


def parse_json(raw):
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e}): send a JSON "
                            "object") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got "
                            f"{type(body).__name__}")
    return body


def _number(body, name, default, low, high, integer=False, low_open=False):
    value = body.get(name)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"'{name}' must be {kind}, got {json.dumps(value)[:40]}",
                       param=name)
    below = value <= low if low_open else value < low
    if below or (high is not None and value > high):
        if high is None:
            expected = f">= {low}"
        else:
            expected = f"in {'(' if low_open else '['}{low}, {high}]"
        raise APIError(400, f"'{name}' must be {expected}, got {value}", param=name)
    return value


def parse_sampling(body, context_length):
    """(Sampling, stream, include_usage) from a request body; APIError when a value is
    out of range. max_tokens may use at most the model's context."""
    if body.get("n") not in (None, 1):
        raise APIError(400, f"'n' must be 1 (one reply per request), got {body.get('n')}",
                       param="n")
    if body.get("logprobs") or body.get("top_logprobs") or body.get("echo") \
            or body.get("best_of") not in (None, 1):
        raise APIError(400, "logprobs, top_logprobs, echo and best_of are not supported: "
                            "leave them out")
    name = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
    limit = context_length - 1
    max_tokens = _number(body, name, default_max_tokens(context_length), 1, None,
                         integer=True)
    if max_tokens > limit:
        raise APIError(400, f"'{name}' is {max_tokens}, more than this model's context of "
                            f"{context_length} tokens allows: use at most {limit} (less "
                            "the prompt)", param=name, code="context_length_exceeded")
    temperature = float(_number(body, "temperature", 1.0, 0.0, 2.0))
    top_p = float(_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True))
    top_k = _number(body, "top_k", 0, 0, None, integer=True)
    seed = _number(body, "seed", None, -2**31, 2**31 - 1, integer=True)
    if seed is None:  # OpenAI's rule: without a seed, replies vary
        seed = random.randrange(2**31)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be true or false, got {json.dumps(stream)[:40]}",
                       param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                        top_k=top_k, seed=seed, stop=parse_stop(body.get("stop")))
    return sampling, stream, bool(options.get("include_usage"))


def parse_stop(stop):
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) \
            or len(stops) > MAX_STOP:
        raise APIError(400, f"'stop' must be a string or a list of at most {MAX_STOP} "
                            "strings", param="stop")
    return tuple(s for s in stops if s)


def _text_content(content, i):
    """A message's content: a string, or OpenAI's list of text parts joined."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise APIError(400, f"message {i}: only text content parts "
                                    '({"type": "text", "text": ...}) are supported',
                               param="messages")
            parts.append(part["text"])
        return "".join(parts)
    return content


def parse_messages(body, limits):
    """The conversation as tfllm's checked messages (`developer` is read as `system`)."""
    from tfllm.chat_format import check_messages

    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise APIError(400, f"'messages' has {len(messages)} messages, more than the "
                            f"{limits.max_messages} this server takes: send fewer",
                       param="messages")
    if isinstance(messages, list):
        messages = [{**m, "role": "system" if m.get("role") == "developer" else m.get("role"),
                     "content": _text_content(m.get("content"), i)}
                    if isinstance(m, dict) and "role" in m and "content" in m else m
                    for i, m in enumerate(messages)]
    try:
        return check_messages(messages, where="messages")
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from None


def parse_prompt(body):
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string (or a list of one string)",
                       param="prompt")
    return prompt


def check_model(body, model_id):
    """A request may leave `model` out; one that names another model gets 404."""
    asked = body.get("model")
    if asked not in (None, model_id):
        raise APIError(404, f"the model '{str(asked)[:80]}' does not exist here: this server "
                            f"serves '{model_id}'", param="model", code="model_not_found")


# --- building a reply --------------------------------------------------------------------


class Reply:
    """The ids and envelopes of one reply (chat or completion, plain or streamed)."""

    def __init__(self, kind, model_id):
        self.kind, self.model_id = kind, model_id
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        self.id, self.created = f"{prefix}-{uuid.uuid4().hex}", int(time.time())

    def _envelope(self, object_name, choices, usage=None):
        out = {"id": self.id, "object": object_name, "created": self.created,
               "model": self.model_id, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def whole(self, text, finish_reason, usage):
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion", [choice], usage)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice], usage)

    def chunk(self, text=None, finish_reason=None, first=False):
        """One streamed chunk: a piece of text, or the closing finish reason."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if first else \
                {} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "logprobs": None,
                  "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage):
        name = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return self._envelope(name, [], usage)


def sse(data):
    """One Server-Sent Event carrying `data` (a dict as JSON, or a string as it is)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode("utf-8")
