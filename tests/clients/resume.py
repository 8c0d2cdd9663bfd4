"""A raw client's resume with Python `websockets` (tests/recovery.rs): the `wsgate.offset`
subprotocol, `{"offset":..,"recovered":..}` first, `<offset> <message>` frames, and a resume
with `?since=` that gets each missed message once; an offset the room never handed out is
refused whole (`recovered: false`).

    python3 resume.py ws://HOST:PORT      prints `ok replayed=.. unrecoverable=..` or `fail ..`
"""
import asyncio
import json
import sys

import websockets

ROOM = "resume-py"


async def main(base):
    async with websockets.connect(f"{base}/ws/{ROOM}") as pub:
        sub = await websockets.connect(f"{base}/ws/{ROOM}", subprotocols=["wsgate.offset"])
        assert sub.subprotocol == "wsgate.offset", sub.subprotocol
        first = json.loads(await sub.recv())
        assert first["recovered"] is False, first
        await pub.send("y1")
        await pub.recv()
        offset, text = (await sub.recv()).split(" ", 1)
        assert text == "y1", text
        await sub.close()
        for m in ("y2", "y3"):
            await pub.send(m)
            await pub.recv()
        back = await websockets.connect(
            f"{base}/ws/{ROOM}?since={offset}", subprotocols=["wsgate.offset"]
        )
        again = json.loads(await back.recv())
        assert again["recovered"] is True, again
        replayed = [(await back.recv()).split(" ", 1)[1] for _ in range(2)]
        # Past the room's newest: not an offset it handed out.
        epoch, seq = again["offset"].split("-")
        future = f"{epoch}-{int(seq) + 5}"
        odd = await websockets.connect(
            f"{base}/ws/{ROOM}?since={future}", subprotocols=["wsgate.offset"]
        )
        refused = json.loads(await odd.recv())
        await back.close()
        await odd.close()
        print(f"ok replayed={','.join(replayed)} unrecoverable={str(refused['recovered']).lower()}")


try:
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
except Exception as e:  # noqa: BLE001 - any failure is reported to the Rust test
    print(f"fail {e!r}")
    sys.exit(1)
