"""A WebSocket client for tests/websocket_interop_test.ts, run by Debian's
/usr/bin/python3: sends stdin's bytes in messages of CHUNK bytes, reads
until as many bytes came back, writes them to stdout.

    python3 _ws_client.py websockets URL [--base64] [--origin ORIGIN]
    python3 _ws_client.py websockify URL

`websockets`: the python3-websockets library (binary frames, or the base64
subprotocol with --base64); `websockify`: websockify's own WebSocket class.
A refused upgrade prints `status CODE` on stderr and exits 3.
"""
import asyncio
import base64
import sys

CHUNK = 7000


def read_input():
    return sys.stdin.buffer.read()


async def with_websockets(url, use_base64, origin):
    import websockets
    data = read_input()
    protocols = ["base64"] if use_base64 else None
    try:
        ws = await websockets.connect(url, subprotocols=protocols,
                                      origin=origin, max_size=None)
    except websockets.exceptions.InvalidStatusCode as error:
        print(f"status {error.status_code}", file=sys.stderr)
        sys.exit(3)
    try:
        if use_base64 and ws.subprotocol != "base64":
            print(f"subprotocol {ws.subprotocol}", file=sys.stderr)
            sys.exit(4)
        for at in range(0, len(data), CHUNK):
            piece = data[at:at + CHUNK]
            await ws.send(base64.b64encode(piece).decode() if use_base64
                          else piece)
        got = b""
        while len(got) < len(data):
            message = await ws.recv()
            if use_base64:
                if not isinstance(message, str):
                    print("binary frame in base64 mode", file=sys.stderr)
                    sys.exit(5)
                got += base64.b64decode(message)
            else:
                got += message if isinstance(message, bytes) else message.encode()
        sys.stdout.buffer.write(got)
    finally:
        await ws.close()


def with_websockify(url):
    from websockify.websocket import WebSocket
    data = read_input()
    ws = WebSocket()
    ws.connect(url, protocols=["binary"])
    for at in range(0, len(data), CHUNK):
        ws.sendmsg(data[at:at + CHUNK])
    got = b""
    while len(got) < len(data):
        message = ws.recvmsg()
        if message is None:
            print(f"closed {ws.close_code}", file=sys.stderr)
            sys.exit(6)
        got += message
    ws.close()
    sys.stdout.buffer.write(got)


def main():
    kind, url = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    origin = args[args.index("--origin") + 1] if "--origin" in args else None
    if kind == "websockify":
        with_websockify(url)
    else:
        asyncio.run(with_websockets(url, "--base64" in args, origin))


main()
