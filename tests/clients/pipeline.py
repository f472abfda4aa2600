"""A pipelining client written against the wire protocol with Python's websockets library.

Usage: pipeline.py WS_URL < FRAMES_JSON

Reads a JSON array of frames from stdin, each with a "ref". After the welcome it sends every
frame back to back without waiting for any answer, then prints every event it receives, one JSON
object per line (batches unpacked), until each ref has had its final answer (an "error", or the
reply its frame type asks for). Exits 1 on a timeout or close.
"""

import asyncio
import json
import sys

import websockets

# Seconds to wait for all answers; generous for a loaded machine.
TIMEOUT_S = 30

# The reply that completes each frame type; an "error" completes any of them.
ANSWERS = {
    "message": "ack",
    "direct": "ack",
    "join": "joined",
    "leave": "left",
    "history": "history",
    "presence": "presence",
    "ping": "pong",
}


async def main(url: str, frames: list) -> None:
    expected = {frame["ref"]: ANSWERS[frame["type"]] for frame in frames}
    async with websockets.connect(url, subprotocols=["parley.v1"]) as socket:
        welcome = json.loads(await socket.recv())
        print(json.dumps(welcome), flush=True)
        for frame in frames:
            await socket.send(json.dumps(frame))
        while expected:
            value = json.loads(await socket.recv())
            for event in value if isinstance(value, list) else [value]:
                print(json.dumps(event), flush=True)
                ref = event.get("ref")
                if ref in expected and event.get("type") in (expected[ref], "error"):
                    del expected[ref]


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], json.load(sys.stdin)), TIMEOUT_S))
