"""What a streamed reply sends as tokens come: only settled text, so the pieces always
join to the plain reply (no half characters, no half-seen stop strings)."""

import pytest

from tfllm.serve.engine import RowState, stop_prefix_length
from tfllm.serve.worker import Job, Sampling

END = 7  # a stop token id


def feed(steps, max_tokens=10, stop=()):
    """Feed (token, decoded text after it) pairs; returns (pieces, finish reason)."""
    row = RowState(Job("chat", [3], Sampling(max_tokens, stop=stop), 1), {END})
    pieces = []
    for token, text in steps:
        piece, reason = row.take(token, text)
        pieces.append(piece)
        if reason is not None:
            return pieces, reason
    return pieces, None


def test_a_character_split_across_tokens_is_sent_whole():
    # "é" is two bytes: its first byte alone decodes to U+FFFD.
    pieces, reason = feed([(10, "a"), (11, "a\ufffd"), (12, "a\u00e9"), (END, None)])
    assert pieces == ["a", "", "\u00e9", ""] and reason == "stop"


def test_a_partial_character_left_at_the_length_limit_is_dropped():
    pieces, reason = feed([(10, "ab"), (11, "ab\ufffd")], max_tokens=2)
    assert "".join(pieces) == "ab" and reason == "length"


@pytest.mark.parametrize("steps, max_tokens, sent, reason", [
    # The stop string completes: what led up to it is never sent.
    ([(10, "x E"), (11, "x EN"), (12, "x END and more")], 10, "x ", "stop"),
    # It never completes: the held-back text goes out when the reply ends.
    ([(10, "x E"), (11, "x EN")], 2, "x EN", "length"),
    ([(10, "x E"), (END, None)], 10, "x E", "stop"),
    ([(10, "x E"), (11, "x Ex")], 10, "x Ex", None),
])
def test_text_that_may_begin_a_stop_string_waits(steps, max_tokens, sent, reason):
    pieces, got = feed(steps, max_tokens, stop=("END",))
    assert "".join(pieces) == sent and got == reason


def test_stop_prefix_length():
    assert stop_prefix_length("abcE", ("END", "Q")) == 1
    assert stop_prefix_length("abcEN", ("END",)) == 2
    assert stop_prefix_length("abcEND", ("END",)) == 0  # whole: cut, not held
    assert stop_prefix_length("abc", ()) == 0
