"""A plain nats-py request-reply echo responder: the transport's upper limit (on uvloop,
like every worker)."""

from __future__ import annotations

import asyncio
import sys

import nats
import uvloop


async def main(url: str) -> None:
    nc = await nats.connect(url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("bench.echo", queue="echo", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
