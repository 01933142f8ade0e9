"""A TCP forwarder: the dev node's way to the API server on the host's loopback.

The API server listens on 127.0.0.1 only, which nothing inside the node's
network namespace can reach. This process listens on the host end of the
node's link and copies bytes both ways to the API server, so the kubelet, the
node's components and pods (through the `kubernetes` Service, whose endpoint is
that address) reach it, while the API server stays off every other interface.
TLS passes through untouched: the serving certificate names the link address.

Run as `python -m wukong.devcluster.forward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT`.
"""

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                side.close()

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    listen_host, listen_port, target_host, target_port = argv
    asyncio.run(_serve(listen_host, int(listen_port), target_host, int(target_port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
