"""A real third-party client against wsgate: Python `websockets` (asyncio).

Usage: chat.py ws://127.0.0.1:PORT/ws/ROOM

Connects two clients to the room, prints `ready`, and waits for a line on stdin (the test
sends `go` once wsgate has logged both opens, so no message races a join). Then client a
sends a text message and client b a binary one; both clients must receive both (the sender
included, same opcode, same bytes), and so must a text message that a sends in three
fragments (as one message). Both close with 1000. Prints `ok ...` and exits 0, or
`FAIL: ...` and exits 1. Every wait is bounded.
"""

import asyncio
import sys

try:
    import websockets
    from websockets.asyncio.client import connect
except ImportError as e:
    print(f"FAIL: python3 has no usable `websockets` ({e}): run `make test-deps`", flush=True)
    sys.exit(1)

WAIT = 10.0


async def recv(ws, who):
    try:
        return await asyncio.wait_for(ws.recv(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"client {who} got nothing within {WAIT}s") from None


async def main(url):
    loop = asyncio.get_running_loop()
    async with connect(url, open_timeout=WAIT, close_timeout=WAIT) as a, connect(
        url, open_timeout=WAIT, close_timeout=WAIT
    ) as b:
        print("ready", flush=True)
        go = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 60)
        if go.strip() != "go":
            raise AssertionError(f"expected go on stdin, got {go!r}")

        text = "hello from python websockets ✓"
        await a.send(text)
        for who, ws in (("a", a), ("b", b)):
            got = await recv(ws, who)
            if got != text:
                raise AssertionError(f"client {who}: expected {text!r}, got {got!r}")

        # A message sent in fragments (continuation frames) arrives whole.
        parts = ["frag", "mented ", "message ✓"]
        await a.send(parts)
        for who, ws in (("a", a), ("b", b)):
            got = await recv(ws, who)
            if got != "".join(parts):
                raise AssertionError(f"client {who}: fragments not joined: {got!r}")

        blob = bytes(range(256)) * 4
        await b.send(blob)
        for who, ws in (("a", a), ("b", b)):
            got = await recv(ws, who)
            if not isinstance(got, bytes) or got != blob:
                raise AssertionError(f"client {who}: binary did not round-trip: {got!r:.80}")

    # Leaving the `async with` closed both with 1000 and waited for the server's reply.
    for who, ws in (("a", a), ("b", b)):
        if ws.close_code != 1000:
            raise AssertionError(f"client {who}: close code {ws.close_code}, expected 1000")
    print(
        f"ok python-websockets {websockets.__version__} text={len(text)} chars fragmented=3 "
        f"binary={len(blob)} bytes close={a.close_code},{b.close_code}",
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 120))
    except Exception as e:  # one line for the test's assertion message
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
