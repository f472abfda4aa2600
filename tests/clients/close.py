"""A client that sends a burst and reads until the server closes it, with Python's websockets.

Usage: close.py WS_URL < TEXTS_JSON

Reads a JSON array of strings from stdin: the text frames to send. After the welcome it sends
them all back to back, without waiting for any answer, then reads until the connection closes,
printing every event it receives as one JSON object per line (batches unpacked) and, last,
`{"close": code, "reason": text}` as websockets saw the close: the server's close frame, or 1006
when the connection ended without one. Exits 1 if the server has not closed it within TIMEOUT_S.
"""

import asyncio
import json
import sys

import websockets

# Seconds to wait for the server to close the connection; generous for a loaded machine.
TIMEOUT_S = 20


async def main(url: str, texts: list) -> None:
    socket = await websockets.connect(url, max_size=None)
    print(json.dumps(json.loads(await socket.recv())), flush=True)
    try:
        for text in texts:
            await socket.send(text)
        while True:
            value = json.loads(await socket.recv())
            for event in value if isinstance(value, list) else [value]:
                print(json.dumps(event), flush=True)
    except websockets.ConnectionClosed:
        pass
    print(json.dumps({"close": socket.close_code, "reason": socket.close_reason}), flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], json.load(sys.stdin)), TIMEOUT_S))
