"""An in-graph JSON reader for the `chat` serving signature.

TensorFlow has no JSON op, and TF Serving runs only graph ops, so a conversation sent as
one JSON string is parsed here with string and regex ops (tf-text's regex split is linked
into the stock model server). The input is either

    [{"role": "user", "content": "hi"}, ...]        or        {"messages": [...], ...}

Everything is vectorized over tokens: no loops, no Python callbacks, nothing that can hang.

1. Lex: one regex split cuts the text into JSON tokens (strings, punctuation, literals,
   numbers) and drops whitespace; text that no token pattern matches stays behind as a
   token of its own, which is rejected.
2. Validate: nesting depth is a cumulative sum. Sorting tokens by (depth, position) puts
   every '{' or '[' right before its direct children, which gives each token its
   container; the grammar is then a check of each token against its predecessor and
   container.
3. Pick: message objects are the objects directly inside the messages array; their
   "role" and "content" keys are counted and located with segment ops.
4. Unescape: strings are split into literal runs and escapes; escapes become code points
   (surrogate pairs joined) re-encoded as UTF-8.

A failure is a tf.debugging.Assert, so callers get an InvalidArgumentError that says what
is wrong and what shape was expected. Later stages are gated on earlier checks, so a bad
input never reaches an op that would fail with a less helpful message.
"""

import tensorflow as tf

EXPECTED = ('chat expects a JSON array of {"role": ..., "content": ...} messages, '
            'or an object {"messages": [...]}')

# The lexer's string pattern is loose so that a bad escape or control character yields a
# whole token (reported as such) rather than a split in the middle of a string.
_STRING_LOOSE = r'"(?:[^"\\]|\\.)*"'
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_SCALAR = r"true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_TOKEN = _STRING_LOOSE + r"|[{}\[\]:,]|" + _SCALAR
_WHITESPACE = r"[ \t\n\r]+"
_ESCAPE = r'\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])'
_SIMPLE_ESCAPES = {'\\"': '"', "\\\\": "\\", "\\/": "/", "\\b": "\b", "\\f": "\f",
                   "\\n": "\n", "\\r": "\r", "\\t": "\t"}

# Token classes; BOS stands before the first token.
OBJ_OPEN, OBJ_CLOSE, ARR_OPEN, ARR_CLOSE, COLON, COMMA, STRING, SCALAR, BAD, BOS = range(10)
_PUNCTUATION = {"{": OBJ_OPEN, "}": OBJ_CLOSE, "[": ARR_OPEN, "]": ARR_CLOSE,
                ":": COLON, ",": COMMA}


def parse_conversation(json_string):
    """Parses one JSON conversation into its messages, with graph ops only.

    Args:
        json_string: scalar tf.string, `[{"role": ..., "content": ...}, ...]` or
            `{"messages": [...], ...}`. Other keys, at the top or in a message, may hold
            any JSON value and are ignored. Unlike json.loads, a repeated "messages",
            "role" or "content" key is refused rather than resolved last-wins, and a lone
            surrogate escape decodes to U+FFFD.

    Returns:
        `(roles, contents)`: 1-D tf.string tensors of the same length n >= 1, the decoded
        UTF-8 text of each message's "role" and "content", in order.

    Raises:
        tf.errors.InvalidArgumentError: the input is not UTF-8, not JSON, or JSON of
            another shape (no messages, a message without exactly one string "role" and
            one string "content").

    Example:

    >>> roles, contents = parse_conversation(tf.constant('[{"role": "user", "content": "hi"}]'))
    >>> roles.numpy().tolist(), contents.numpy().tolist()
    ([b'user'], [b'hi'])
    """
    text = tf.ensure_shape(tf.convert_to_tensor(json_string, tf.string), [])
    tokens, starts, cls = _lex(text)
    cls = _check_tokens(tokens, starts, cls, text)
    container, is_key = _check_grammar(tokens, starts, cls, text)
    quoted = tf.where(cls == STRING, tokens, '""')
    length = tf.strings.length(quoted)
    values = _unescape(tf.strings.substr(quoted, tf.ones_like(length), length - 2))
    return _pick_messages(cls, container, is_key, values)


def check_roles(roles, allowed):
    """`roles` (gated on the check) once every role is one of `allowed` (strings); an
    InvalidArgumentError naming the first other role and the allowed ones otherwise."""
    roles = tf.convert_to_tensor(roles, tf.string)
    known = tf.reduce_any(tf.equal(roles[:, None], tf.constant(list(allowed), tf.string)[None]),
                          axis=1)
    first = _first(~known)
    message = tf.strings.join(["chat message ", tf.strings.as_string(first), " has role `",
                               _at(roles, first, ""),
                               "`: roles must be one of " + ", ".join(allowed)])
    with tf.control_dependencies(_require(tf.reduce_all(known), message)):
        return tf.identity(roles)


def _require(condition, message):
    """Asserts `condition` with `message`; the ops to gate later work on (none in eager
    mode, where a failure raises right here)."""
    op = tf.debugging.Assert(condition, [message])
    return [] if op is None else [op]


def _first(mask):
    """Index of the first True in 1-D `mask`, or its length if none (safe when empty)."""
    index = tf.range(tf.size(mask))
    return tf.reduce_min(tf.concat([tf.where(mask, index, tf.size(mask)), [tf.size(mask)]], 0))


def _at(values, i, past_end):
    """values[i], or `past_end` for i == len(values): for error messages."""
    return tf.gather(tf.concat([values, [past_end]], 0), i)


def _lex(text):
    """JSON tokens of `text`: (tokens, byte offsets, classes), each (n,)."""
    valid = tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"),
                     text)
    with tf.control_dependencies(_require(valid, EXPECTED + "; the input is not valid UTF-8")):
        text = tf.identity(text)
    # Imported here: a command that never parses chat JSON skips TF Text's start-up.
    import tensorflow_text as tf_text

    # Whitespace is a dropped delimiter; every other delimiter is a kept token.
    tokens, starts, _ = tf_text.regex_split_with_offsets(text, _TOKEN + "|" + _WHITESPACE,
                                                         _TOKEN)
    tokens, starts = tokens.flat_values, tf.cast(starts.flat_values, tf.int32)

    cls = tf.fill(tf.shape(tokens), BAD)
    cls = tf.where(tf.strings.regex_full_match(tokens, _SCALAR), SCALAR, cls)
    cls = tf.where(tf.strings.regex_full_match(tokens, _STRING), STRING, cls)
    for punctuation, value in _PUNCTUATION.items():
        cls = tf.where(tf.equal(tokens, punctuation), value, cls)
    return tokens, starts, cls


def _describe(tokens, starts, text, i):
    """"`token` at byte N" for error messages; i == len(tokens) is the end of input."""
    token = tf.strings.substr(_at(tokens, i, ""), 0, 24, unit="UTF8_CHAR")
    where = tf.strings.as_string(_at(starts, i, tf.strings.length(text)))
    # Backticks, as quotes come back escaped in an error message.
    return tf.where(tf.equal(i, tf.size(tokens)),
                    tf.strings.join(["end of input (byte ", where, ")"]),
                    tf.strings.join(["`", token, "` at byte ", where]))


def _depths(cls):
    """Nesting depth before and after each token, and which tokens open a container."""
    is_open = (cls == OBJ_OPEN) | (cls == ARR_OPEN)
    is_close = (cls == OBJ_CLOSE) | (cls == ARR_CLOSE)
    step = tf.cast(is_open, tf.int32) - tf.cast(is_close, tf.int32)
    after = tf.cumsum(step)
    return after - step, after, is_open


def _check_tokens(tokens, starts, cls, text):
    """`cls`, gated on: every token valid, the input one bracketed value, nothing after."""
    bad = _first(cls == BAD)
    message = tf.strings.join([EXPECTED + "; unexpected text ",
                               _describe(tokens, starts, text, bad)])
    with tf.control_dependencies(_require(tf.equal(bad, tf.size(cls)), message)):
        cls = tf.identity(cls)
    starts_ok = tf.reduce_any((cls[:1] == OBJ_OPEN) | (cls[:1] == ARR_OPEN))
    message = EXPECTED + "; the input is empty or does not start with [ or {"
    with tf.control_dependencies(_require(starts_ok, message)):
        cls = tf.identity(cls)

    # Every token but the last lies inside the first bracket, and the last closes it.
    _, after, _ = _depths(cls)
    outside = _first(after[:-1] <= 0) + 1
    message = tf.strings.join([EXPECTED + "; unbalanced brackets or trailing text: ",
                               _describe(tokens, starts, text, outside)])
    balanced = tf.equal(outside, tf.size(cls)) & tf.equal(after[-1], 0)
    with tf.control_dependencies(_require(balanced, message)):
        return tf.identity(cls)


def _check_grammar(tokens, starts, cls, text):
    """Asserts the balanced token stream is JSON; returns each token's container (index
    of the enclosing '{' or '[', the matching one for a closer, -1 for the first token)
    and whether each token is an object key."""
    n = tf.size(cls)
    index = tf.range(n)
    before, after, is_open = _depths(cls)
    # In (level, position) order an opener comes right before its children and closer.
    level = tf.where(is_open, after, before)
    order = tf.argsort(tf.cast(level, tf.int64) * tf.cast(n, tf.int64)
                       + tf.cast(index, tf.int64))
    open_sorted = tf.gather(is_open, order)
    opener_rank = tf.maximum(tf.cumsum(tf.cast(open_sorted, tf.int32)) - 1, 0)
    group_sorted = tf.gather(tf.boolean_mask(order, open_sorted), opener_rank)
    group = tf.scatter_nd(order[:, None], group_sorted, [n])  # (n,) own index for openers
    # An opener sits in the '[' just before it, or else in its predecessor's container.
    prev_index = tf.maximum(index - 1, 0)
    parent = tf.where(tf.gather(cls, prev_index) == ARR_OPEN, prev_index,
                      tf.gather(group, prev_index))
    container = tf.where(index == 0, -1, tf.where(is_open, parent, group))
    container_cls = tf.gather(tf.concat([cls, [BOS]], 0), tf.where(container < 0, n, container))
    in_object, in_array = container_cls == OBJ_OPEN, container_cls == ARR_OPEN

    def shifted(x, first):  # x of the previous token
        return tf.concat([[first], x[:-1]], 0)

    prev = shifted(cls, BOS)
    is_key = (cls == STRING) & in_object & ((prev == OBJ_OPEN) | (prev == COMMA))
    prev_is_key = shifted(is_key, False)
    after_value = ((prev == SCALAR) | (prev == OBJ_CLOSE) | (prev == ARR_CLOSE)
                   | ((prev == STRING) & ~prev_is_key))
    value_ok = ((prev == BOS) | (prev == COLON) | (prev == ARR_OPEN)
                | ((prev == COMMA) & shifted(in_array, False)))
    ok = tf.where(is_open | (cls == SCALAR), value_ok, False)
    ok = tf.where(cls == STRING, is_key | value_ok, ok)
    ok = tf.where(cls == COLON, prev_is_key, ok)
    ok = tf.where(cls == COMMA, after_value, ok)
    ok = tf.where(cls == OBJ_CLOSE, in_object & ((prev == OBJ_OPEN) | after_value), ok)
    ok = tf.where(cls == ARR_CLOSE, in_array & ((prev == ARR_OPEN) | after_value), ok)
    bad = _first(~ok)
    message = tf.strings.join([EXPECTED + "; invalid JSON, unexpected ",
                               _describe(tokens, starts, text, bad)])
    with tf.control_dependencies(_require(tf.equal(bad, n), message)):
        return tf.identity(container), tf.identity(is_key)


def _unescape(strings):
    """JSON string bodies (validated, quotes stripped) as UTF-8 text. A lone surrogate
    escape becomes U+FFFD, as UTF-8 cannot hold it."""
    import tensorflow_text as tf_text

    pieces = tf_text.regex_split(strings, _ESCAPE, _ESCAPE)  # literal runs and escapes
    piece = pieces.flat_values
    # value_rowids() would tile a (strings, longest row) matrix in a graph; this is linear.
    row = tf.searchsorted(pieces.row_splits[1:], tf.range(tf.size(piece, tf.int64)),
                          side="right")

    is_unicode = tf.strings.regex_full_match(piece, r"\\u[0-9a-fA-F]{4}")
    hex_digits = tf.strings.substr(tf.where(is_unicode, piece, "\\u0000"), 2, 4)
    char = tf.cast(tf.io.decode_raw(hex_digits, tf.uint8, fixed_length=4), tf.int32)
    digit = tf.where(char <= ord("9"), char - ord("0"), (char | 32) - ord("a") + 10)
    unit = tf.reduce_sum(digit * [4096, 256, 16, 1], axis=1)  # UTF-16 code unit
    high = is_unicode & (unit >= 0xD800) & (unit <= 0xDBFF)
    low = is_unicode & (unit >= 0xDC00) & (unit <= 0xDFFF)
    # A high surrogate joins a low one right after it in the same string.
    next_low = tf.concat([low[1:] & tf.equal(row[1:], row[:-1]), [False]], 0)
    paired = high & next_low
    next_unit = tf.concat([unit[1:], [0]], 0)
    code_point = tf.where(paired, 0x10000 + (unit - 0xD800) * 0x400 + (next_unit - 0xDC00),
                          unit)
    encoded = tf.strings.unicode_encode(code_point[:, None], "UTF-8", errors="replace")

    out = piece
    for escape, replacement in _SIMPLE_ESCAPES.items():
        out = tf.where(tf.equal(piece, escape), replacement, out)
    out = tf.where(is_unicode, encoded, out)
    out = tf.where(tf.concat([[False], paired[:-1]], 0), "", out)  # joined into the high
    return tf.strings.unsorted_segment_join(out, row, tf.size(strings, out_type=row.dtype))


def _pick_messages(cls, container, is_key, values):
    """(roles, contents) of the messages array, asserting the conversation's shape."""
    n = tf.size(cls)
    index = tf.range(n)
    top_is_array = tf.equal(cls[0], ARR_OPEN)
    # For {"messages": [...]}, the array is the value two tokens after its key.
    messages_key = is_key & tf.equal(container, 0) & tf.equal(values, "messages")
    array_at = tf.minimum(_first(messages_key) + 2, n - 1)
    wrapped = (tf.equal(tf.reduce_sum(tf.cast(messages_key, tf.int32)), 1)
               & tf.equal(tf.gather(cls, array_at), ARR_OPEN))
    message = EXPECTED + '; the object needs exactly one "messages" key holding an array'
    with tf.control_dependencies(_require(top_is_array | wrapped, message)):
        array_at = tf.where(top_is_array, 0, array_at)

    is_value = (tf.equal(cls, OBJ_OPEN) | tf.equal(cls, ARR_OPEN) | tf.equal(cls, SCALAR)
                | (tf.equal(cls, STRING) & ~is_key))
    is_element = is_value & tf.equal(container, array_at)
    is_message = is_element & tf.equal(cls, OBJ_OPEN)
    count = tf.reduce_sum(tf.cast(is_element, tf.int32))
    checks = _require(count > 0, EXPECTED + "; the messages array is empty")
    element_rank = tf.cumsum(tf.cast(is_element, tf.int32)) - 1
    not_object = _first(is_element & ~is_message)
    message = tf.strings.format(EXPECTED + "; message {} is not an object",
                                _at(element_rank, not_object, 0))
    checks += _require(tf.equal(not_object, n), message)

    # Keys of message i go to segment i; all other tokens to a spare last segment.
    safe_container = tf.maximum(container, 0)
    owned = is_key & tf.gather(is_message, safe_container)
    segment = tf.where(owned, tf.gather(element_rank, safe_container), count)
    with tf.control_dependencies(checks):
        segment = tf.identity(segment)

    fields = []
    for field in ("role", "content"):
        hit = owned & tf.equal(values, field)
        hits = tf.math.unsorted_segment_sum(tf.cast(hit, tf.int32), segment, count + 1)[:-1]
        value_at = tf.math.unsorted_segment_max(tf.where(hit, index + 2, 0), segment,
                                                count + 1)[:-1]
        wrong = _first(tf.not_equal(hits, 1))
        message = tf.strings.format(EXPECTED + '; message {} must have exactly one "'
                                    + field + '" (it has {})', (wrong, _at(hits, wrong, 0)))
        with tf.control_dependencies(_require(tf.equal(wrong, count), message)):
            value_at = tf.identity(value_at)
        not_string = _first(tf.not_equal(tf.gather(cls, value_at), STRING))
        message = tf.strings.format(EXPECTED + '; message {} "' + field
                                    + '" must be a string', not_string)
        with tf.control_dependencies(_require(tf.equal(not_string, count), message)):
            fields.append(tf.gather(values, value_at))
    return tuple(fields)
