"""A guest client written against the wire protocol with Python's websockets library.

Usage: guest.py WS_URL

Connects without ?name=, so the server makes up a guest name. Sends one old-style untyped frame
that names its sender, then one typed message, and prints every frame it receives, one JSON
object per line, until both messages have come back to it. Exits 1 on a timeout or close.
"""

import asyncio
import json
import sys

import websockets

# Seconds to wait for all answers; generous for a loaded machine.
TIMEOUT_S = 20


async def main(url: str) -> None:
    async with websockets.connect(url) as socket:
        welcome = json.loads(await socket.recv())
        print(json.dumps(welcome), flush=True)
        await socket.send(json.dumps({"sender": "Abhi", "content": "legacy"}))
        await socket.send(json.dumps({"type": "message", "content": "typed", "ref": "t1"}))
        seen = set()
        while seen != {"legacy", "typed"}:
            frame = json.loads(await socket.recv())
            print(json.dumps(frame), flush=True)
            if frame.get("type") == "message":
                seen.add(frame.get("content"))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), TIMEOUT_S))
