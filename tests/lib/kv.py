#!/usr/bin/env python3
"""kv: RESP2 clients for 08_framework's kv_server that check every byte of every reply.

Python 3 standard library only. Each subcommand prints `ok: ...` and exits 0, or
`FAIL: ...` and exits 1. Every wait has a deadline; TIMEOUT_SCALE stretches them all.
The expected replies are redis-server 7.0's: `table` passes against a real redis-server
too (`kv.py table --port 6379 --redis`), which is how they were checked.
"""

import argparse
import os
import random
import select
import signal
import socket
import sys
import threading
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    pass


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def enc(*args):
    """A request as redis-cli sends it: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


# Reply encoders: the bytes redis sends.
def ok():
    return b"+OK\r\n"


def bulk(v):
    v = v.encode() if isinstance(v, str) else v
    return b"$%d\r\n%s\r\n" % (len(v), v)


NIL = b"$-1\r\n"


def integer(n):
    return b":%d\r\n" % n


def err(msg):
    return b"-" + msg.encode() + b"\r\n"


def arity(name):
    return err("ERR wrong number of arguments for '%s' command" % name)


def array(*items):
    return b"*%d\r\n" % len(items) + b"".join(items)


SYNTAX = err("ERR syntax error")
NOT_INT = err("ERR value is not an integer or out of range")
BAD_EXPIRE = err("ERR invalid expire time in 'set' command")


def recv_exact(s, n, name):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            raise Failure("%s: %d of %d bytes within the deadline: %r" % (name, len(buf), n, bytes(buf[:200])))
        except ConnectionResetError:
            raise Failure("%s: reset after %d of %d bytes" % (name, len(buf), n))
        if not chunk:
            raise Failure("%s: EOF after %d of %d bytes: %r" % (name, len(buf), n, bytes(buf[:200])))
        buf += chunk
    return bytes(buf)


def mismatch(want, got, name):
    off = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
    lo = max(0, off - 40)
    return "%s: differs at byte %d of %d:\n  want %r\n  got  %r" % (name, off, len(want), want[lo:off + 40], got[lo:off + 40])


def expect(s, want, name):
    got = recv_exact(s, len(want), name)
    if got != want:
        raise Failure(mismatch(want, got, name))


def nothing_more(s, name):
    """No byte beyond what was expected: a PING must be answered by exactly +PONG."""
    s.sendall(enc("PING"))
    expect(s, b"+PONG\r\n", name + ": then PING")


def expect_closed(s, name, timeout=5.0):
    """The server closed S without a byte of reply (EOF or reset), within TIMEOUT."""
    s.settimeout(scaled(timeout))
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise Failure("%s: still open after %.1f s (want closed)" % (name, scaled(timeout)))
    if data:
        raise Failure("%s: got %r, want the connection closed with no reply" % (name, data[:200]))


def expect_refused(s, reason, name, timeout=5.0):
    """The server answered S "-ERR Protocol error: REASON" (redis 7's bytes), then closed it
    cleanly (EOF, not a reset), within TIMEOUT."""
    want = b"-ERR Protocol error: " + reason + b"\r\n"
    got = b""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: got %r after %.1f s, want %r then EOF" % (name, got[:200], scaled(timeout), want))
        s.settimeout(left)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            raise Failure("%s: reset after %r, want %r then EOF" % (name, got[:200], want))
        except socket.timeout:
            continue
        if not data:
            break
        got += data
        if len(got) > len(want):
            break
    if got != want:
        raise Failure("%s: got %r, want %r then EOF" % (name, got[:200], want))


# --- the command table ---------------------------------------------------------------
# (request args, the reply's exact bytes), run in order on one connection of a fresh server.
def table_rows():
    unknown_long = "x" * 150
    return [
        (["PING"], b"+PONG\r\n"),
        (["ping"], b"+PONG\r\n"),
        (["PING", "hello"], bulk("hello")),
        (["PING", "a", "b"], arity("ping")),
        (["ECHO"], arity("echo")),
        (["ECHO", "x", "y"], arity("echo")),
        (["ECHO", b"a b\r\nc\x00"], bulk(b"a b\r\nc\x00")),
        (["ECHO", ""], bulk("")),
        (["GET", "k"], NIL),
        (["GET"], arity("get")),
        (["GET", "a", "b"], arity("get")),
        (["SET", "k", "v"], ok()),
        (["GET", "k"], bulk("v")),
        (["set", "k", b"\x00\xff\r\n"], ok()),
        (["GET", "k"], bulk(b"\x00\xff\r\n")),
        (["SET", "k"], arity("set")),
        (["SET", "k", "v2", "NX"], NIL),
        (["GET", "k"], bulk(b"\x00\xff\r\n")),
        (["SET", "new", "n", "nx"], ok()),
        (["SET", "k", "v3", "XX"], ok()),
        (["SET", "missing", "v", "XX"], NIL),
        (["SET", "missing", "v", "XX", "GET"], NIL),  # not set, and no old value to give
        (["GET", "missing"], NIL),
        (["SET", "k", "v", "NX", "XX"], SYNTAX),
        (["SET", "k", "v", "XX", "NX"], SYNTAX),  # either order
        (["SET", "k", "v", "EX"], SYNTAX),
        (["SET", "k", "v", "EX", "10", "PX", "10"], SYNTAX),
        (["SET", "k", "v", "KEEPTTL", "EX", "10"], SYNTAX),
        (["SET", "k", "v", "PX", "10", "KEEPTTL"], SYNTAX),
        (["SET", "k", "v", "FOO"], SYNTAX),
        (["SET", "k", "v", "EX", "abc", "FOO"], SYNTAX),
        (["SET", "k", "v", "EX", "0"], BAD_EXPIRE),
        (["SET", "k", "v", "PX", "-1"], BAD_EXPIRE),
        (["SET", "k", "v", "EX", "abc"], NOT_INT),
        (["SET", "k", "v", "PX", "01"], NOT_INT),
        (["SET", "k", "v", "EX", "9223372036854775"], BAD_EXPIRE),
        (["SET", "k", "v", "EX", "9223372036854776"], BAD_EXPIRE),
        (["SET", "k", "v", "PX", "9223372036854775807"], BAD_EXPIRE),
        (["GET", "k"], bulk("v3")),  # every refused SET above changed nothing
        (["SET", "k", "v4", "EX", "100", "EX", "100"], ok()),
        (["SET", "k", "v5", "GET"], bulk("v4")),
        (["SET", "k", "v6", "nx", "GET"], bulk("v5")),
        (["SET", "fresh", "f", "GET"], NIL),
        (["GET", "k"], bulk("v5")),
        (["SET", "k", "v", "KEEPTTL"], ok()),
        (["DEL"], arity("del")),
        (["DEL", "k", "nokey", "k"], integer(1)),
        (["DEL", "k"], integer(0)),
        (["GET", "k"], NIL),
        (["EXISTS"], arity("exists")),
        (["SET", "a", "1"], ok()),
        (["SET", "b", "2"], ok()),
        (["EXISTS", "a", "a", "b", "nokey"], integer(3)),
        (["EXISTS", "nokey"], integer(0)),
        (["INCR"], arity("incr")),
        (["INCR", "a", "b"], arity("incr")),
        (["INCR", "a"], integer(2)),
        (["GET", "a"], bulk("2")),
        (["INCR", "counter"], integer(1)),
        (["INCR", "counter"], integer(2)),
        (["SET", "big", "9223372036854775806"], ok()),
        (["INCR", "big"], integer(9223372036854775807)),
        (["INCR", "big"], err("ERR increment or decrement would overflow")),
        (["GET", "big"], bulk("9223372036854775807")),
        (["SET", "neg", "-9223372036854775808"], ok()),
        (["INCR", "neg"], integer(-9223372036854775807)),
        (["SET", "neg", "-1"], ok()),
        (["INCR", "neg"], integer(0)),
        (["GET", "neg"], bulk("0")),
        (["SET", "s", "abc"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", "01"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", "+1"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", " 1"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", "-0"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", ""], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", "9223372036854775808"], ok()),
        (["INCR", "s"], NOT_INT),
        (["SET", "s", "123456789012345678901"], ok()),
        (["INCR", "s"], NOT_INT),
        (["GET", "s"], bulk("123456789012345678901")),
        (["MGET"], arity("mget")),
        (["MGET", "a", "nokey", "b"], array(bulk("2"), NIL, bulk("2"))),
        (["MGET", "nokey"], array(NIL)),
        (["FOO"], err("ERR unknown command 'FOO', with args beginning with: ")),
        (["foo", "a", "b c"], err("ERR unknown command 'foo', with args beginning with: 'a' 'b c' ")),
        ([unknown_long, "y" * 100, "z" * 100],
         err("ERR unknown command '%s', with args beginning with: '%s' '%s' "
             % ("x" * 128, "y" * 100, "z" * 25))),
        (["CONFIG"], arity("config")),
        (["CONFIG", "GET"], arity("config|get")),
        (["CONFIG", "GET", "save"], array(bulk("save"), bulk(""))),
        (["CONFIG", "GET", "appendonly"], array(bulk("appendonly"), bulk("no"))),
        (["config", "get", "SAVE", "appendonly"], array(bulk("SAVE"), bulk(""), bulk("appendonly"), bulk("no"))),
        (["CONFIG", "GET", "APPENDONLY", "save"], array(bulk("save"), bulk(""), bulk("APPENDONLY"), bulk("no"))),
        (["CONFIG", "GET", "save", "save"], array(bulk("save"), bulk(""))),
        # Not in the order asked: redis answers from a dict, where save comes first.
        (["CONFIG", "GET", "appendonly", "save"], array(bulk("save"), bulk(""), bulk("appendonly"), bulk("no"))),
        (["CONFIG", "GET", "nosuchparam"], array()),
        # Globs, matched without regard to case; a glob answers with the parameter's own name.
        (["CONFIG", "GET", "SAV*"], array(bulk("save"), bulk(""))),
        (["CONFIG", "GET", "append?nly", "s[a-b]ve"], array(bulk("save"), bulk(""), bulk("appendonly"), bulk("no"))),
        (["CONFIG", "FOO"], err("ERR unknown subcommand 'FOO'. Try CONFIG HELP.")),
        (["COMMAND", "FOO"], err("ERR unknown subcommand 'FOO'. Try COMMAND HELP.")),
        (["COMMAND", "COUNT", "x"], arity("command|count")),
    ]


# What redis-cli and redis-benchmark ask at start, answered by kv_server only (a real redis
# sends its whole command table).
KV_ONLY_ROWS = [
    (["COMMAND", "DOCS"], array()),
    (["COMMAND"], array()),
    (["COMMAND", "COUNT"], integer(10)),
    (["CONFIG", "GET", "*"], array(bulk("save"), bulk(""), bulk("appendonly"), bulk("no"))),
]


def config_pairs(reply):
    """The (name, value) pairs of a CONFIG GET reply (an array of bulks), sorted."""
    t = reply.split(b"\r\n")[1:-1]   # "$n", name, "$n", value, ...
    return sorted((t[i + 1], t[i + 3]) for i in range(0, len(t), 4))


def cmd_table(a):
    s = connect(a.port)
    rows = table_rows() + ([] if a.redis else KV_ONLY_ROWS)
    if a.redis:
        s.sendall(enc("FLUSHALL"))
        expect(s, ok(), "FLUSHALL")
    for i, (args, want) in enumerate(rows):
        s.sendall(enc(*args))
        name = "row %d %r" % (i, [x[:40] for x in args])
        if a.redis and args[0].upper() == "CONFIG" and want.startswith(b"*4\r\n"):
            # A real redis 7.0 answers CONFIG GET from a dict whose order is chosen at random
            # when the process starts (kv_server: save first): the same pairs, in either order.
            got = recv_exact(s, len(want), name)
            if config_pairs(got) != config_pairs(want):
                raise Failure(mismatch(want, got, name + " (in either order)"))
            rows[i] = (args, got)  # the pipelined pass below expects this process's order
            continue
        expect(s, want, name)
    nothing_more(s, "after the table")
    # The same rows' requests once more, pipelined in one write, on a fresh key space: the
    # replies in the same order (the rows that depend on state see the state the first pass
    # left, so only the stateless rows are replayed).
    stateless = [(r, w) for r, w in rows if r[0].upper() in ("PING", "ECHO", "FOO", "CONFIG", "COMMAND")
                 or not isinstance(r[0], str) or r[0].startswith("x")]
    s.sendall(b"".join(enc(*r) for r, _ in stateless))
    expect(s, b"".join(w for _, w in stateless), "the stateless rows pipelined")
    s.close()
    print("ok: %d commands, each reply byte for byte; %d pipelined in one write" % (len(rows), len(stateless)))


# --- pipelining ---------------------------------------------------------------------------
def pipeline_script(rng, n):
    """N random requests and the replies a correct server gives, from a model of the table."""
    model = {}
    reqs, reps = [], []
    run = rng.randrange(1 << 30)  # a key space of its own: the model starts empty
    keys = ["key:%d:%d" % (run, i) for i in range(40)]
    for i in range(n):
        op = rng.choice(["SET", "GET", "GET", "INCR", "DEL", "EXISTS", "MGET", "ECHO", "PING", "INLINE"])
        k = rng.choice(keys)
        if op == "SET":
            v = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
            model[k] = v
            reqs.append(enc("SET", k, v))
            reps.append(ok())
        elif op == "GET":
            reqs.append(enc("GET", k))
            reps.append(bulk(model[k]) if k in model else NIL)
        elif op == "INCR":
            ck = "ctr:%d:%d" % (run, rng.randrange(4))
            model[ck] = str(int(model.get(ck, b"0")) + 1).encode()
            reqs.append(enc("INCR", ck))
            reps.append(integer(int(model[ck])))
        elif op == "DEL":
            ks = [rng.choice(keys) for _ in range(rng.randrange(1, 4))]
            gone = 0
            for x in ks:
                if x in model:
                    del model[x]
                    gone += 1
            reqs.append(enc("DEL", *ks))
            reps.append(integer(gone))
        elif op == "EXISTS":
            ks = [rng.choice(keys) for _ in range(rng.randrange(1, 4))]
            reqs.append(enc("EXISTS", *ks))
            reps.append(integer(sum(1 for x in ks if x in model)))
        elif op == "MGET":
            ks = [rng.choice(keys) for _ in range(rng.randrange(1, 5))]
            reqs.append(enc("MGET", *ks))
            reps.append(array(*[bulk(model[x]) if x in model else NIL for x in ks]))
        elif op == "ECHO":
            v = "echo-%d" % i
            reqs.append(enc("ECHO", v))
            reps.append(bulk(v))
        elif op == "PING":
            reqs.append(enc("PING", "p%d" % i))
            reps.append(bulk("p%d" % i))
        else:
            reqs.append(b"PING\r\n")
            reps.append(b"+PONG\r\n")
    return reqs, reps


def cmd_pipeline(a):
    rng = random.Random(a.seed)
    reqs, reps = pipeline_script(rng, a.count)
    data = b"".join(reqs)
    want = b"".join(reps)
    s = connect(a.port)
    got = bytearray()
    errors = []

    def reader():
        try:
            got.extend(recv_exact(s, len(want), "pipelined replies"))
        except Failure as e:
            errors.append(str(e))

    t = threading.Thread(target=reader)
    t.start()
    pieces = 0
    if a.split == "none":
        s.sendall(data)
        pieces = 1
    else:
        # Random split points, a piece at a time: requests cut anywhere, several per write.
        i = 0
        while i < len(data):
            n = rng.randrange(1, a.max_piece + 1)
            s.sendall(data[i:i + n])
            i += n
            pieces += 1
            if rng.randrange(8) == 0:
                time.sleep(0.001)  # let some pieces arrive alone (a split the server must hold)
    t.join(scaled(30))
    if t.is_alive():
        raise Failure("replies not read within %.0f s" % scaled(30))
    if errors:
        raise Failure(errors[0])
    if bytes(got) != want:
        raise Failure(mismatch(want, bytes(got), "pipelined replies"))
    nothing_more(s, "after the pipeline")
    s.close()
    print("ok: %d requests (%d bytes) in %d writes, %d reply bytes, in order, byte for byte"
          % (a.count, len(data), pieces, len(want)))


# --- expiry ---------------------------------------------------------------------------------
def cmd_expiry(a):
    """SET k v PX T: present before T, gone after T; SET without PX cancels an earlier PX;
    SET ... KEEPTTL keeps it; INCR keeps it; DEL then SET gives a key with no expiry; EX counts
    seconds (an EX 100 key outlives the PX keys)."""
    px = int(scaled(a.px_ms / 1000.0) * 1000)
    s = connect(a.port)
    t0 = time.monotonic()
    for k in ("gone", "kept", "ttlkept", "incr", "readded"):
        s.sendall(enc("SET", k, "v", "PX", str(px)))
        expect(s, ok(), "SET %s PX %d" % (k, px))
    s.sendall(enc("SET", "kept", "w"))  # overwrite: the expiry ends
    expect(s, ok(), "SET kept w")
    s.sendall(enc("SET", "ttlkept", "w", "KEEPTTL"))
    expect(s, ok(), "SET ttlkept w KEEPTTL")
    s.sendall(enc("SET", "incr", "5", "PX", str(px)))
    expect(s, ok(), "SET incr 5 PX")
    s.sendall(enc("INCR", "incr"))
    expect(s, integer(6), "INCR incr")
    s.sendall(enc("DEL", "readded"))
    expect(s, integer(1), "DEL readded")
    s.sendall(enc("SET", "readded", "r"))
    expect(s, ok(), "SET readded r")
    s.sendall(enc("SET", "ex", "e", "EX", "100"))  # seconds: still there after the PX keys' time
    expect(s, ok(), "SET ex e EX 100")
    # Not before its time: read at once, while the deadline is still far (checked by the clock).
    s.sendall(enc("MGET", "gone", "ttlkept", "incr"))
    expect(s, array(bulk("v"), bulk("w"), bulk("6")), "MGET before the deadline")
    early = time.monotonic() - t0
    if early >= px / 1000.0 * 0.8:
        raise Failure("inconclusive: the early reads took %.3f s of the %d ms" % (early, px))
    # After its time: wait past it (the server's clock started at its SET, after t0).
    time.sleep(max(0.0, px / 1000.0 - (time.monotonic() - t0)) + scaled(0.05))
    s.sendall(enc("MGET", "gone", "kept", "ttlkept", "incr", "readded", "ex"))
    expect(s, array(NIL, bulk("w"), NIL, NIL, bulk("r"), bulk("e")), "MGET after the deadline")
    s.sendall(enc("EXISTS", "gone", "kept"))
    expect(s, integer(1), "EXISTS after the deadline")
    s.close()
    print("ok: PX %d ms: present at %.0f ms, gone after; an overwrite, DEL + SET cancel it; KEEPTTL and INCR keep it; EX 100 stays"
          % (px, early * 1000))


def cmd_expire_quiet(a):
    """SET keys with PX and never touch them again: only the server's timers can expire them
    (the stop line's `kv: 0 keys` shows they did). Prints when the deadline has passed."""
    px = int(scaled(a.px_ms / 1000.0) * 1000)
    s = connect(a.port)
    for i in range(a.keys):
        s.sendall(enc("SET", "q%d" % i, "v", "PX", str(px)))
        expect(s, ok(), "SET q%d" % i)
    s.sendall(enc("SET", "forever", "v", "PX", str(px)))
    expect(s, ok(), "SET forever PX")
    s.sendall(enc("SET", "forever", "w"))  # cancels that key's timer
    expect(s, ok(), "SET forever w")
    s.close()
    time.sleep(px / 1000.0 + scaled(0.1))
    print("ok: %d keys set with PX %d ms, %d ms ago" % (a.keys + 1, px, px + int(scaled(0.1) * 1000)))


# --- limits ------------------------------------------------------------------------------------
def request_of_size(size, key="k"):
    """SET key <value> whose whole encoding is exactly SIZE bytes."""
    base = len(enc("SET", key, ""))
    for vlen in range(size - base, max(-1, size - base - 12), -1):
        r = enc("SET", key, b"v" * vlen)
        if len(r) == size:
            return r, vlen
    raise Failure("no SET request of exactly %d bytes" % size)


def cmd_limits(a):
    m = a.max_frame
    bystander = connect(a.port)
    bystander.sendall(enc("SET", "b", "1"))
    expect(bystander, ok(), "bystander SET")
    # At the limit: taken, and the value is all there.
    at, vlen = request_of_size(m)
    s = connect(a.port)
    s.sendall(at)
    expect(s, ok(), "a request of exactly %d bytes" % m)
    s.sendall(enc("GET", "k"))
    expect(s, bulk(b"v" * vlen), "GET of the %d-byte value" % vlen)
    # An inline request of exactly the limit (its "\r\n" included).
    line = b"ECHO " + b"i" * (m - 7) + b"\r\n"
    s.sendall(line)
    expect(s, bulk(b"i" * (m - 7)), "an inline line of exactly %d bytes" % m)
    # RX_RESP_MAX_ARGS (1024) arguments, when they fit.
    keys = ["k"] + ["n%d" % i for i in range(1022)]
    req = enc("MGET", *keys)
    if len(req) > m:
        raise Failure("MGET of 1023 keys is %d bytes, over --max-frame %d: use a larger one" % (len(req), m))
    s.sendall(req)
    expect(s, array(bulk(b"v" * vlen), *[NIL] * 1022), "MGET of 1023 keys (1024 arguments)")
    nothing_more(s, "after the requests at the limit")
    s.close()
    # One byte past: that client gets redis's "-ERR Protocol error: ..." and is closed (an
    # EOF after it, not a reset); judged at the length line.
    cases = [("a request of %d bytes" % (m + 1), request_of_size(m + 1)[0], b"invalid bulk length"),
             ("an inline line of %d bytes" % (m + 1), b"ECHO " + b"i" * (m - 6) + b"\r\n",
              b"too big inline request"),
             ("1025 arguments", enc("MGET", *["n%d" % i for i in range(1024)])[:64],
              b"invalid multibulk length"),
             ("a bulk length over the limit, its bytes never sent",
              b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % m, b"invalid bulk length"),
             ("a negative bulk length", b"*2\r\n$4\r\nECHO\r\n$-3\r\nabc\r\n", b"invalid bulk length"),
             ("a bulk without its CRLF", b"*2\r\n$4\r\nECHO\r\n$3\r\nabcd\r\n", b"bulk not followed by CRLF")]
    for i, (name, data, reason) in enumerate(cases):
        s = connect(a.port)
        s.sendall(data)
        expect_refused(s, reason, name)
        s.close()
        # Everyone else carries on.
        bystander.sendall(enc("INCR", "b"))
        expect(bystander, integer(2 + i), "the bystander after %s" % name)
    nothing_more(bystander, "bystander")
    bystander.close()
    print("ok: %d bytes and 1024 arguments taken; %d bad requests each answered -ERR Protocol error and closed; "
          "the bystander served throughout" % (m, len(cases)))


# --- protocol errors, side by side with redis-server ----------------------------------------
PROTOERR_CASES = [
    ("a bulk length that is not a number", b"*1\r\n$abc\r\n"),
    ("a multibulk length that is not a number", b"*abc\r\n"),
    ("a negative bulk length", b"*2\r\n$4\r\nECHO\r\n$-3\r\nabc\r\n"),
    ("a bulk length with a leading zero", b"*1\r\n$01\r\nx\r\n"),
    ("an element that is not a bulk", b"*2\r\n$4\r\nECHO\r\nx3\r\n"),
    ("a good request, then a bad one", b"PING\r\n*x\r\n"),
    ("two good pipelined, then a bad bulk length", b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nz\r\n*1\r\n$+1\r\n"),
    ("a bulk length over the limit (512 MB)", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$600000000\r\n"),
]


def send_then_read_all(port, data, name, timeout=5.0):
    """Sends DATA, shuts the write side (as nc -N does), reads until EOF. The bytes read."""
    s = connect(port)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(scaled(timeout))
        got = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                raise Failure("%s: no EOF within %.1f s (got %r)" % (name, scaled(timeout), got[:200]))
            except ConnectionResetError:
                raise Failure("%s: reset after %r (want EOF)" % (name, got[:200]))
            if not d:
                return got
            got += d
    finally:
        s.close()


def refusal_streams(port, count):
    """COUNT clients in turn each send a bad request and keep streaming after it (reading as
    they go, stopping once the whole -ERR line is in): each must get the -ERR in full and an
    EOF, never a reset."""
    want = b"-ERR Protocol error: invalid bulk length\r\n"
    for run in range(count):
        name = "streaming after a bad request, run %d" % (run + 1)
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        s.setblocking(False)
        out = b"*1\r\n$abc\r\n" + b"z" * (256 << 10)
        got = b""
        deadline = time.monotonic() + scaled(10)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("%s: no EOF within %.1f s (got %r)" % (name, scaled(10), got[:200]))
                sending = len(got) < len(want)
                r, w, _ = select.select([s], [s] if sending else [], [], left)
                try:
                    if r:
                        d = s.recv(65536)
                        if not d:
                            break
                        got += d
                    if w and sending:
                        n = s.send(out)
                        out = out[n:] if n < len(out) else b"z" * (64 << 10)
                except (BlockingIOError, InterruptedError):
                    continue
                except (ConnectionResetError, BrokenPipeError) as e:
                    raise Failure("%s: %s after %r (want the whole -ERR, then EOF)" % (name, e, got[:200]))
        finally:
            s.close()
        if got != want:
            raise Failure("%s: got %r, want %r then EOF" % (name, got[:200], want))


def cmd_protoerr(a):
    """Each malformed input gets from kv_server exactly the bytes a real redis-server (--peer)
    sends for it, then EOF. Then a client that keeps streaming after its bad request (reading
    as it goes, stopping once the whole -ERR line is in) gets the -ERR in full and an EOF,
    never a reset: the library's close lingers instead of resetting on the bytes it left unread."""
    for name, data in PROTOERR_CASES:
        want = send_then_read_all(a.peer, data, "redis-server: " + name)
        if not want.endswith(b"\r\n") or b"-ERR Protocol error: " not in want:
            raise Failure("redis-server: %s: answered %r (want a protocol error)" % (name, want))
        got = send_then_read_all(a.port, data, name)
        if got != want:
            raise Failure("%s: kv_server sent %r, redis-server %r" % (name, got, want))
    refusal_streams(a.port, 5)
    print("ok: %d malformed inputs answered byte for byte as redis-server answers them, then EOF; "
          "5 clients streaming after a bad request each got the whole -ERR, then EOF" % len(PROTOERR_CASES))


# --- a table that grows -------------------------------------------------------------------------
def cmd_many_keys(a):
    """KEYS keys set in pipelined batches (the table doubles several times), every one read back
    with MGET, half deleted, then EXISTS and MGET again: no key lost or mixed up by a resize."""
    rng = random.Random(a.seed)
    keys = ["many:%d:%d" % (a.seed, i) for i in range(a.keys)]
    vals = [b"%d:" % i + bytes(rng.randrange(97, 123) for _ in range(rng.randrange(1, 30))) for i in range(a.keys)]
    s = connect(a.port)
    for lo in range(0, a.keys, 500):
        batch = range(lo, min(lo + 500, a.keys))
        s.sendall(b"".join(enc("SET", keys[i], vals[i]) for i in batch))
        expect(s, ok() * len(batch), "SET of keys %d.." % lo)

    def check(present, name):
        for lo in range(0, a.keys, 200):
            batch = range(lo, min(lo + 200, a.keys))
            s.sendall(enc("MGET", *[keys[i] for i in batch]))
            expect(s, array(*[bulk(vals[i]) if present(i) else NIL for i in batch]), "%s: MGET of keys %d.." % (name, lo))

    check(lambda i: True, "after the SETs")
    gone = [i for i in range(a.keys) if i % 2 == 1]
    for lo in range(0, len(gone), 200):
        batch = gone[lo:lo + 200]
        s.sendall(enc("DEL", *[keys[i] for i in batch]))
        expect(s, integer(len(batch)), "DEL of %d keys" % len(batch))
    check(lambda i: i % 2 == 0, "after deleting the odd ones")
    s.sendall(enc("EXISTS", *keys[:1000]))
    expect(s, integer(500), "EXISTS of the first 1000")
    s.close()
    print("ok: %d keys set, read back, half deleted, the rest read back again" % a.keys)


# --- many clients ------------------------------------------------------------------------------
def cmd_clients(a):
    """C clients at once, each its own keys, interleaved: every reply to its own client."""
    errors = []

    def one(c):
        try:
            rng = random.Random(c)
            s = connect(a.port)
            for r in range(a.rounds):
                k = "c%d:%d" % (c, r % 5)
                v = b"%d-%d-" % (c, r) + bytes(rng.randrange(97, 123) for _ in range(rng.randrange(50)))
                s.sendall(enc("SET", k, v) + enc("GET", k) + enc("INCR", "cnt%d" % c))
                expect(s, ok() + bulk(v) + integer(r + 1), "client %d round %d" % (c, r))
            s.close()
        except (Failure, OSError) as e:
            errors.append("client %d: %s" % (c, e))

    ts = [threading.Thread(target=one, args=(c,)) for c in range(a.clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(scaled(30))
    if any(t.is_alive() for t in ts):
        raise Failure("clients still running after %.0f s" % scaled(30))
    if errors:
        raise Failure(errors[0])
    print("ok: %d clients x %d rounds, each reply to its own client" % (a.clients, a.rounds))


# --- whole words only, conflicts in either order ---------------------------------------------
def table_more_rows():
    """Rows that pin what a prefix or a one-sided check would let through: a command name or an
    option is a whole word (GETX is not GET, NXX not NX), every pair of conflicting options is
    refused in either order, and PX without its value is a syntax error like EX's."""
    k = "more:k"
    return [
        (["GETX", k], err("ERR unknown command 'GETX', with args beginning with: '%s' " % k)),
        (["PINGPONG"], err("ERR unknown command 'PINGPONG', with args beginning with: ")),
        (["SETX", k, "v"], err("ERR unknown command 'SETX', with args beginning with: '%s' 'v' " % k)),
        (["SET", k, "v", "PX"], SYNTAX),
        (["SET", k, "v", "EX", "10", "KEEPTTL"], SYNTAX),
        (["SET", k, "v", "PX", "10", "EX", "10"], SYNTAX),
        (["SET", k, "v", "KEEPTTL", "PX", "10"], SYNTAX),
        (["SET", k, "v", "NXX"], SYNTAX),
        (["SET", k, "v", "EXX", "10"], SYNTAX),
        (["SET", k, "v", "GETX"], SYNTAX),
        (["GET", k], NIL),  # every refused SET above changed nothing
        (["CONFIG", "GETX", "save"], err("ERR unknown subcommand 'GETX'. Try CONFIG HELP.")),
        (["COMMAND", "COUNTX"], err("ERR unknown subcommand 'COUNTX'. Try COMMAND HELP.")),
        (["SET", k, "v", "px", "100000", "nx"], ok()),
        (["GET", k], bulk("v")),
        # An unknown command's arguments stop once 128 bytes of them are written: one of 125
        # bytes is exactly 128 quoted, so the next is not shown at all.
        (["FOO", "a" * 125, "b"], err("ERR unknown command 'FOO', with args beginning with: '%s' " % ("a" * 125))),
        (["FOO", "a" * 124, "bc"], err("ERR unknown command 'FOO', with args beginning with: '%s' 'b' " % ("a" * 124))),
        # An unknown subcommand's name is cut at 128 bytes.
        (["CONFIG", "s" * 150], err("ERR unknown subcommand '%s'. Try CONFIG HELP." % ("s" * 128))),
        (["COMMAND", "c" * 129], err("ERR unknown subcommand '%s'. Try COMMAND HELP." % ("c" * 128))),
    ]


def cmd_table_more(a):
    s = connect(a.port)
    rows = table_more_rows()
    if a.redis:
        s.sendall(enc("FLUSHALL"))
        expect(s, ok(), "FLUSHALL")
    for i, (args, want) in enumerate(rows):
        s.sendall(enc(*args))
        expect(s, want, "row %d %r" % (i, args))
    nothing_more(s, "after the rows")
    s.close()
    print("ok: %d rows (whole words, conflicts either way), each reply byte for byte" % len(rows))


# --- the lingering close after a refusal, without a peer ---------------------------------------
def cmd_refusal_stream(a):
    """COUNT clients each send a bad request and keep streaming after it (reading as they go,
    stopping once the whole -ERR line is in): each gets the -ERR in full and an EOF, never a
    reset (the close lingers instead of resetting on the bytes left unread). protoerr's second
    half, without the redis-server it needs for its first."""
    refusal_streams(a.port, a.count)
    print("ok: %d clients streaming after a bad request each got the whole -ERR, then EOF" % a.count)


# --- a read after the deadline, before the timer's turn ---------------------------------------
def proc_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_server_queued(s, limit):
    """Waits (up to LIMIT s) until the server's end of S holds unread bytes (/proc/net/tcp's
    rx_queue of the socket whose remote end is S's): what was sent is in the server's socket."""
    port = s.getsockname()[1]
    want = ":%04X" % port
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[2].endswith(want) and int(fields[4].split(":")[1], 16) > 0:
                    return True
        time.sleep(0.001)  # poll interval of a loop with a deadline
    return False


# The wait system calls a stopped main thread may sit in (x86_64 epoll_wait, epoll_pwait,
# epoll_pwait2; aarch64 epoll_pwait, epoll_pwait2; ppoll/poll for the poll backend): a stop
# inside one ends it with EINTR at SIGCONT, a turn that runs the timers before any request.
WAIT_SYSCALLS = {"x86_64": {232, 281, 441, 271, 7}, "aarch64": {22, 441, 73}}


def stopped_in_wait(pid):
    """Whether the stopped thread PID sits in a wait system call (/proc/PID/syscall), or None
    where that file cannot be read (ptrace restrictions: yama's ptrace_scope for a non-root
    user): then a stop in the wait is not told apart, and the timer may take the key first
    (the answer is the same; only the path is not proven)."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            first = f.read().split()[0]
    except OSError:
        return None
    if first in ("running", "-1"):
        return False
    return int(first) in WAIT_SYSCALLS.get(os.uname().machine, set())


def cmd_expire_stopped(a):
    """README: "a read between the deadline and the timer's turn (a busy loop) already finds
    nothing". Forces that path on a -t 0 server: SET k v PX T; a busy client keeps the loop
    turning (pipelined PINGs); the server is stopped (SIGSTOP) inside a turn, not inside its
    wait (/proc/PID/syscall: a stop in the wait would end it with EINTR and give the timers a
    turn of their own first), and kept stopped past T; a GET sent meanwhile waits in its socket.
    At SIGCONT the turn finishes by its old clock (the timer not due), and the next turn starts
    past T with the GET readable: the request is handled (step 2) before the timers (step 4),
    so only lookup's deadline check keeps the old value from it. The GET must find nothing.
    Retries (bounded) when the stop landed in the wait or too near T."""
    px = int(scaled(a.px_ms / 1000.0) * 1000)
    s = connect(a.port)
    busy = connect(a.port)
    busy.settimeout(scaled(30))
    stop = threading.Event()
    errors = []

    def keep_busy():
        batch = b"PING\r\n" * 2000
        try:
            while not stop.is_set():
                busy.sendall(batch)
                recv_exact(busy, 7 * 2000, "the busy client's PONGs")
        except (Failure, OSError) as e:
            errors.append(str(e))

    bt = threading.Thread(target=keep_busy)
    bt.start()
    timer_gone = tries = 0
    try:
        for attempt in range(40):
            if errors:
                raise Failure(errors[0])
            k = "stopped:%d" % attempt
            t0 = time.monotonic()
            s.sendall(enc("SET", k, "v", "PX", str(px)))
            expect(s, ok(), "SET %s PX %d" % (k, px))
            tries += 1
            os.kill(a.pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + scaled(5)
                while proc_state(a.pid) != "T":
                    if time.monotonic() > deadline:
                        raise Failure("the server is not stopped %.1f s after SIGSTOP" % scaled(5))
                    time.sleep(0.001)  # poll interval of a loop with a deadline
                stopped_at = time.monotonic() - t0
                in_wait = stopped_in_wait(a.pid)
                retry = in_wait is True or stopped_at >= px / 1000.0 * 0.7
                if not retry:
                    time.sleep(max(0.0, px / 1000.0 - (time.monotonic() - t0)) + 0.05)
                    s.sendall(enc("GET", k))
                    if not wait_server_queued(s, scaled(2)):
                        raise Failure("the GET is not in the stopped server's socket after %.1f s" % scaled(2))
            finally:
                os.kill(a.pid, signal.SIGCONT)
            if retry:
                if stopped_at >= px / 1000.0 * 0.7:
                    px *= 2
                s.sendall(enc("DEL", k))
                if recv_exact(s, 4, "DEL %s" % k) == integer(0):
                    timer_gone += 1  # its timer ran first: counted in `expired` too
                continue
            expect(s, NIL, "GET %s sent %d ms after its PX %d, while the server was stopped in a turn" %
                   (k, int((time.monotonic() - t0) * 1000), px))
            nothing_more(s, "after the GET")
            print("ok: stopped %s %.0f ms after SET PX %d (try %d); the GET sent past the deadline "
                  "found nothing; earlier tries expired by their timers: %d"
                  % ("in a turn" if in_wait is False else "(in a turn or in the wait: /proc/PID/syscall unreadable)",
                     stopped_at * 1000, px, tries, timer_gone))
            return
        raise Failure("inconclusive: the server was never stopped outside its wait before the deadline in %d tries" % tries)
    finally:
        stop.set()
        bt.join(scaled(30))
        busy.close()
        s.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="kv", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seed", type=int, default=None)
        return p

    p = add("table", "every command of the table, each reply byte for byte")
    p.add_argument("--redis", action="store_true", help="against a real redis-server (FLUSHALL first)")
    p = add("pipeline", "COUNT random requests in one stream, replies checked in order")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--split", choices=["none", "random"], default="random")
    p.add_argument("--max-piece", type=int, default=64)
    p = add("expiry", "PX keys present before their time, gone after; overwrite cancels")
    p.add_argument("--px-ms", type=int, default=300)
    p = add("expire-quiet", "PX keys left alone: only the server's timers remove them")
    p.add_argument("--px-ms", type=int, default=200)
    p.add_argument("--keys", type=int, default=50)
    p = add("limits", "requests at --max-frame and 1024 arguments, and one past")
    p.add_argument("--max-frame", type=int, required=True)
    p = add("many-keys", "KEYS keys set, read back, half deleted: no key lost by the table's growth")
    p.add_argument("--keys", type=int, default=20000)
    p = add("protoerr", "malformed requests answered as redis-server (--peer PORT) answers them, then EOF")
    p.add_argument("--peer", type=int, required=True)
    p = add("clients", "many clients at once, replies to their own client")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--rounds", type=int, default=50)
    p = add("table-more", "whole words only (GETX, NXX), option conflicts in either order, PX without a value")
    p.add_argument("--redis", action="store_true", help="against a real redis-server (FLUSHALL first)")
    p = add("refusal-stream", "clients streaming after a bad request get the whole -ERR, then EOF")
    p.add_argument("--count", type=int, default=5)
    p = add("expire-stopped", "a GET that reaches a stopped server past a key's deadline finds nothing")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--px-ms", type=int, default=300)
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    try:
        {"table": cmd_table, "pipeline": cmd_pipeline, "expiry": cmd_expiry,
         "expire-quiet": cmd_expire_quiet, "limits": cmd_limits, "clients": cmd_clients,
         "many-keys": cmd_many_keys, "protoerr": cmd_protoerr, "table-more": cmd_table_more,
         "refusal-stream": cmd_refusal_stream, "expire-stopped": cmd_expire_stopped}[a.cmd](a)
    except Failure as e:
        print("FAIL: %s (seed %d)" % (e, a.seed))
        return 1
    except OSError as e:
        print("FAIL: %s: %s (seed %d)" % (a.cmd, e, a.seed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
