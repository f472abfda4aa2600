"""One fast sender, one reader and one peer that never reads, written with Python's websockets.

Usage: flood.py WS_URL COUNT

Three plain clients (no subprotocol) join the default room under names unique to this run:
- "a" sends COUNT messages of about 3 KB back to back, each with its own ref, without waiting for
  any answer, and reads everything it gets. A message answered `overloaded` was not stored: "a"
  resends it with the same ref after a short backoff, until every ref is acked or the deadline.
- "b" only reads, as fast as it can.
- "c" is a raw TCP socket with a small receive buffer that reads its welcome and nothing more, so
  the kernel cannot absorb the room's traffic for it. Its close cannot be seen from here (it
  never reads); the caller checks it on the server.

When "a" and "b" have everything (or the deadline passed), each sends a `ping` and reads up to its
`pong`, so whatever the server queued for it before is read too. Then it notes whether either was
closed, closes both normally, and prints one JSON object on stdout:

    {"run": the names' suffix, "complete": bool, "retries": n, "a": SIDE, "b": SIDE}
    SIDE = {"close": null or the close code, "messages": [[id, index], ...] in arrival order,
            "acks": [[index, id], ...] in arrival order, "errors": {code: count}, "pong": bool}

"c" stays connected until stdin reaches end of file, so the caller can first see the server
close it; then the script exits 0.
"""

import asyncio
import json
import os
import socket
import sys
import time
from urllib.parse import urlsplit

import websockets

# Content of every message besides its index: about 3 KB.
BODY = "x" * 3000
# Seconds "a" may spend until every message is acked; then it gives up.
DEADLINE_S = 30
# Seconds to wait for each side's pong once the flood is over.
DRAIN_S = 15
# Seconds before "a" resends what the server refused as overloaded.
BACKOFF_S = 0.02
# Receive buffer of the peer that never reads, in bytes (the kernel may round it up).
STALLED_RCVBUF = 4096


class Side:
    """What one reading client received."""

    def __init__(self, run: str):
        self.prefix = f"{run}:"
        self.messages = []
        self.acks = []
        self.errors = {}
        self.refused = []
        self.acked = set()
        self.seen = set()
        self.pong = asyncio.Event()
        self.changed = asyncio.Event()

    def take(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "message":
            head = event.get("content", "").split(" ", 1)[0]
            if head.startswith(self.prefix):
                index = int(head[len(self.prefix):])
                self.messages.append([event["id"], index])
                self.seen.add(index)
        elif kind == "ack":
            index = int(event["ref"][len(self.prefix):])
            self.acks.append([index, event["id"]])
            self.acked.add(index)
        elif kind == "error":
            code = event.get("code")
            self.errors[code] = self.errors.get(code, 0) + 1
            if code == "overloaded" and event.get("ref", "").startswith(self.prefix):
                self.refused.append(int(event["ref"][len(self.prefix):]))
        elif kind == "pong" and event.get("ref") == "drain":
            self.pong.set()
        self.changed.set()

    def report(self, ws) -> dict:
        return {
            "close": ws.close_code,
            "messages": self.messages,
            "acks": self.acks,
            "errors": self.errors,
            "pong": self.pong.is_set(),
        }


async def read(ws, side: Side) -> None:
    try:
        async for raw in ws:
            value = json.loads(raw)
            for event in value if isinstance(value, list) else [value]:
                side.take(event)
    except websockets.ConnectionClosed:
        pass
    side.changed.set()


def stalled_peer(url: str) -> socket.socket:
    """Opens the WebSocket of "c" over a raw socket and reads up to its welcome frame."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connect, so the window the kernel advertises is small from the start.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.settimeout(DRAIN_S)
    sock.connect((parts.hostname, parts.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1024)
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"Cannot upgrade the stalled peer: {head!r}")
    # The welcome is a short text frame (length under 126), sent once the server registered it.
    while len(rest) < 2 or len(rest) < 2 + rest[1]:
        rest += sock.recv(1024)
    return sock


async def main(url: str, count: int) -> None:
    run = os.urandom(4).hex()
    a = await websockets.connect(f"{url}?name=a-{run}", max_size=None, max_queue=None)
    b = await websockets.connect(f"{url}?name=b-{run}", max_size=None, max_queue=None)
    c = stalled_peer(f"{url}?name=c-{run}")
    for ws in (a, b):
        json.loads(await ws.recv())
    side_a, side_b = Side(run), Side(run)
    readers = [asyncio.create_task(read(a, side_a)), asyncio.create_task(read(b, side_b))]

    def frame(index: int) -> str:
        return json.dumps(
            {"type": "message", "content": f"{run}:{index} {BODY}", "ref": f"{run}:{index}"}
        )

    def done() -> bool:
        return len(side_a.acked) == count and len(side_a.seen) == count and len(
            side_b.seen
        ) == count

    retries = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        for index in range(count):
            await a.send(frame(index))
        while not done() and time.monotonic() < deadline and a.open and b.open:
            if side_a.refused:
                await asyncio.sleep(BACKOFF_S)
                refused, side_a.refused = side_a.refused, []
                for index in refused:
                    retries += 1
                    await a.send(frame(index))
                continue
            side_a.changed.clear()
            try:
                await asyncio.wait_for(side_a.changed.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    except websockets.ConnectionClosed:
        pass
    complete = done()
    for ws, side in ((a, side_a), (b, side_b)):
        try:
            await ws.send(json.dumps({"type": "ping", "ref": "drain"}))
            await asyncio.wait_for(side.pong.wait(), DRAIN_S)
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass
    result = {
        "run": run,
        "complete": complete,
        "retries": retries,
        "a": side_a.report(a),
        "b": side_b.report(b),
    }
    await asyncio.gather(a.close(), b.close())
    await asyncio.gather(*readers)
    print(json.dumps(result), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    c.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
