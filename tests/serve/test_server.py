"""`python -m tfllm.serve` as clients use it: the official `openai` client and raw HTTP
against real servers on loopback ports (see serving.py).

The reference for every reply is the SavedModel server on the same weights: its `chat`
and `serving_default` signatures decode in one graph loop, which
tests/chat/test_chat_serving.py checks against `Generator.stream`; the run-directory
server decodes step by step in batches, so the two agreeing checks both."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import (API_KEY, ROOT, health, raw, servers, sft_run,  # noqa: F401
                     wait_idle)

openai = pytest.importorskip("openai", reason="the openai client is in requirements.txt")

CONVERSATION = [{"role": "system", "content": "You answer about Python."},
                {"role": "user", "content": "What is a list?"}]


def client(server, key=API_KEY):
    return openai.OpenAI(base_url=server.api, api_key=key, max_retries=0, timeout=120)


def streamed(chunks):
    """(text, finish reasons, chunk objects) of an openai stream."""
    chunks = list(chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    return text, reasons, chunks


def chat_text(server, messages, max_tokens, **sampling):
    return client(server).chat.completions.create(
        model="tiny-sft", messages=messages, max_tokens=max_tokens, **sampling)


def test_chat_plain_and_streamed_agree_with_the_saved_model(servers):
    api = client(servers["main"])
    reply = api.chat.completions.create(model="tiny-sft", messages=CONVERSATION,
                                        temperature=0, max_tokens=12)
    saved = chat_text(servers["saved"], CONVERSATION, 12, temperature=0)
    expected = saved.choices[0].message.content
    assert reply.choices[0].message.content == expected and expected
    assert reply.choices[0].message.role == "assistant"
    assert reply.object == "chat.completion" and reply.model == "tiny-sft"
    prompt_tokens = saved.usage.prompt_tokens
    assert reply.usage.prompt_tokens == prompt_tokens > 10
    assert reply.usage.total_tokens == prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == (
        "length" if reply.usage.completion_tokens == 12 else "stop")

    text, reasons, chunks = streamed(api.chat.completions.create(
        model="tiny-sft", messages=CONVERSATION, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True}))
    assert text == expected
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len(chunks) > 3  # token by token, not one piece
    assert reasons[-1] == reply.choices[0].finish_reason and not any(reasons[:-1])
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    # Sampling with a seed is reproducible, and the same streamed or not.
    sampling = dict(temperature=0.9, top_p=0.9, seed=3)
    sampled = api.chat.completions.create(model="tiny-sft", messages=CONVERSATION,
                                          max_tokens=12, **sampling)
    assert sampled.choices[0].message.content == chat_text(
        servers["saved"], CONVERSATION, 12, **sampling).choices[0].message.content
    assert streamed(api.chat.completions.create(
        model="tiny-sft", messages=CONVERSATION, max_tokens=12, stream=True,
        **sampling))[0] == sampled.choices[0].message.content
    # OpenAI's content parts and the `developer` role are read as text and system.
    parts = api.chat.completions.create(model="tiny-sft", max_tokens=12, temperature=0,
                                        messages=[{"role": "developer",
                                                   "content": CONVERSATION[0]["content"]},
                                                  {"role": "user", "content": [
                                                      {"type": "text", "text": "What is "},
                                                      {"type": "text", "text": "a list?"}]}])
    assert parts.choices[0].message.content == expected


def complete(server, prompt, max_tokens, **sampling):
    return client(server).completions.create(
        model="tiny-sft", prompt=prompt, max_tokens=max_tokens, **sampling).choices[0].text


def test_completions_and_models(servers):
    api = client(servers["main"])
    assert [m.id for m in api.models.list()] == ["tiny-sft"]
    prompt = "A list is"
    done = api.completions.create(model="tiny-sft", prompt=prompt, max_tokens=10,
                                  temperature=0)
    expected = complete(servers["saved"], prompt, 10, temperature=0)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 10
    pieces = list(api.completions.create(model="tiny-sft", prompt=prompt, max_tokens=10,
                                         temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in pieces) == expected
    # A stop string ends the reply before it, with finish_reason "stop".
    stop = expected[4:6]
    cut = api.completions.create(model="tiny-sft", prompt=prompt, max_tokens=10,
                                 temperature=0, stop=[stop])
    assert cut.choices[0].text == expected[:expected.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_concurrent_clients_are_batched_without_cross_talk(servers):
    api = client(servers["main"])
    requests = [dict(messages=[{"role": "user", "content": f"What colour is thing {i}?"}],
                     max_tokens=6 + i, temperature=0 if i % 2 else 0.8, seed=i)
                for i in range(8)]

    def ask(request, stream=False):
        out = api.chat.completions.create(model="tiny-sft", stream=stream, **request)
        return streamed(out)[0] if stream else out.choices[0].message.content

    one_at_a_time = [ask(r) for r in requests]
    before = health(servers["main"])
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(ask, requests, [i % 3 == 0 for i in range(8)]))
    after = wait_idle(servers["main"])
    assert together == one_at_a_time
    assert len(set(one_at_a_time)) > 1  # the requests really differ
    # Requests sent together shared decoding batches.
    assert after["batches"] - before["batches"] < len(requests)
    assert after["largest_batch"] > 1


def read_first_chunk_then_close(server, body, stream=True, wait=0.0):
    """Send `body` to chat completions over a socket, read the first pieces of a stream
    (or wait `wait` seconds for a plain reply), then drop the connection."""
    url = urllib.parse.urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    payload = json.dumps({**body, "stream": stream}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    seen = b""
    if stream:
        while seen.count(b"data: ") < 3:  # the role chunk and two pieces of text
            data = sock.recv(4096)
            assert data, seen
            seen += data
    else:
        time.sleep(wait)
    sock.close()
    return seen


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_stops_its_generation(servers, stream):
    server = servers["slow"]  # 50 ms per step: a 40-token reply would take 2 s
    before = wait_idle(server)
    body = {"messages": [{"role": "user", "content": "Tell me everything."}],
            "max_tokens": 40, "temperature": 0}
    read_first_chunk_then_close(server, body, stream, wait=0.5)
    after = wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completed"] == before["completed"]
    assert after["tokens_generated"] - before["tokens_generated"] < 30


BAD_CHAT = [
    # (what the request changes, status, words in the error message)
    ({"messages": []}, 400, "non-empty list"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, 400, "unknown role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]},
     400, "system message may only come first"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "must be a string"),
    ({"messages": [{"role": "user", "content": "hi"}] * 9}, 400, "more than the 8"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, 400,
     "last message alone is longer"),
    ({"max_tokens": 64}, 400, "use at most 63"),
    ({"max_tokens": 0}, 400, "'max_tokens' must be >= 1"),
    ({"max_tokens": "ten"}, 400, "must be an integer"),
    ({"temperature": 3}, 400, "'temperature' must be in"),
    ({"top_p": 0}, 400, "'top_p' must be in"),
    ({"n": 2}, 400, "'n' must be 1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4"),
    ({"stream": "yes"}, 400, "'stream' must be true or false"),
    ({"logprobs": True}, 400, "not supported"),
    ({"model": "gpt-4o"}, 404, "does not exist here"),
    ({"messages": [{"role": "user", "content": "x" * 30000}]}, 413, "more than the 20000"),
]


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(servers):
    server = servers["main"]
    good = {"model": "tiny-sft", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "temperature": 0}
    for change, status, words in BAD_CHAT:
        got, body = raw(server, "POST", "/v1/chat/completions", {**good, **change})
        assert got == status and words in body["error"]["message"], (change, got, body)
        assert set(body["error"]) == {"message", "type", "param", "code"}
    for request, status, words in [
            (("POST", "/v1/chat/completions", "{not json"), 400, "not valid JSON"),
            (("POST", "/v1/chat/completions", "[1, 2]"), 400, "must be a JSON object"),
            (("POST", "/v1/completions", {"prompt": ["a", "b"]}), 400, "'prompt' must be"),
            (("POST", "/v1/completions", {"prompt": "word " * 80, "max_tokens": 4}), 400,
             "exceeds the model's context"),
            (("GET", "/v1/chat/completions", None), 405, "Method Not Allowed"),
            (("GET", "/v1/nothing", None), 404, "Not Found")]:
        got, body = raw(server, *request)
        assert got == status and words in body["error"]["message"], (request, got, body)
    # The official client sees them as its own exception types.
    api = client(server)
    with pytest.raises(openai.BadRequestError, match="use at most 63"):
        api.chat.completions.create(model="tiny-sft", messages=good["messages"],
                                    max_tokens=500)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-4o", messages=good["messages"])
    # ... and the server still answers.
    assert raw(server, "POST", "/v1/chat/completions", good)[0] == 200
    assert health(server)["failed"] == 0


def test_the_api_key_guards_the_api_only(servers):
    server = servers["main"]
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for key in (None, "wrong-key"):
        got, body = raw(server, "POST", "/v1/chat/completions", request, key=key)
        assert got == 401 and body["error"]["code"] == "invalid_api_key"
    assert raw(server, "GET", "/v1/models", key=None)[0] == 401
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong-key").models.list()
    assert raw(server, "POST", "/v1/chat/completions", request)[0] == 200
    assert raw(server, "GET", "/health", key=None)[0] == 200
    assert raw(server, "GET", "/", key=None)[0] == 200
    # A server started without a key takes requests without one.
    assert raw(servers["slow"], "GET", "/v1/models", key=None)[0] == 200


def test_a_saved_model_streams_whole_replies_and_batches_greedy_ones(servers):
    api = client(servers["saved"], key="unused")
    reply = api.chat.completions.create(model="tiny-sft", messages=CONVERSATION,
                                        temperature=0, max_tokens=12)
    text, reasons, chunks = streamed(api.chat.completions.create(
        model="tiny-sft", messages=CONVERSATION, temperature=0, max_tokens=12, stream=True))
    assert text == reply.choices[0].message.content and text
    assert reasons[-1] == reply.choices[0].finish_reason
    # Greedy requests that queue together (here behind a sampled one, which runs alone)
    # share signature calls, each answered right.
    questions = [[{"role": "user", "content": f"What colour is thing {i}?"}] for i in range(6)]
    before = health(servers["saved"])

    def ask(server, messages):
        return chat_text(server, messages, 8, temperature=0).choices[0].message.content

    with ThreadPoolExecutor(1 + len(questions)) as pool:
        blocker = pool.submit(chat_text, servers["saved"], [{"role": "user", "content": "Hi"}],
                              40, temperature=1.0, seed=1)
        together = list(pool.map(lambda m: ask(servers["saved"], m), questions))
    blocker.result()
    assert health(servers["saved"])["batches"] - before["batches"] < 1 + len(questions)
    assert together == [ask(servers["main"], m) for m in questions]
    got, body = raw(servers["saved"], "POST", "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "word " * 80}]})
    assert got == 400 and "last message alone is longer" in body["error"]["message"]


def test_a_language_model_run_completes_text_and_refuses_chat(servers):
    api = client(servers["lm"], key="unused")
    done = api.completions.create(model="t", prompt="A list is", max_tokens=10,
                                  temperature=0)
    assert done.choices[0].text == complete(servers["saved"], "A list is", 10, temperature=0)
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model="t", messages=CONVERSATION)
    message = refused.value.body["message"]
    assert "is a language model (task lm), not a chat model" in message
    assert "\n" not in message
    assert refused.value.body["code"] == "model_not_chat"
    assert health(servers["lm"])["chat"] is False


def serve(*args):
    return subprocess.run([sys.executable, "-m", "tfllm.serve", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_start_up_refusals_are_one_line(sft_run, tmp_path, servers):
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    for name in ("config.json", "classifier.json"):
        (classifier / name).write_text("{}", encoding="utf-8")
    taken = urllib.parse.urlsplit(servers["main"].url).port
    for args, words in [((classifier,), "it is a classifier (task classify)"),
                        ((tmp_path / "nothing",), "neither a run directory"),
                        ((sft_run, "--port", taken), "cannot listen on"),
                        ((sft_run, "--max-batch", 0), "--max-batch must be >= 1")]:
        result = serve(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr
