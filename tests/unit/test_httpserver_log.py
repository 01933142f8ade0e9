"""A request the client framed wrong is answered 400 and logged at DEBUG, not ERROR."""

import asyncio
import logging

import pytest
from aiohttp import web

from wukong.runtime.serving import HttpServer


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _fail(_: web.Request) -> web.Response:
    raise RuntimeError("a bug in a handler")


async def _send(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read(200)
    writer.close()
    return answer


async def test_bad_framing_is_a_400_at_debug_and_a_handler_bug_stays_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wukong.runtime.http")
    server = HttpServer(routes={"/fail": _fail}, post_routes={"/x": _ok})
    port = await server.start("127.0.0.1:0")
    try:
        bad_chunk = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n"
        assert (await _send(port, bad_chunk)).startswith(b"HTTP/1.0 400")
        framing = [r for r in caplog.records if r.name == "wukong.runtime.http"]
        assert framing and all(r.levelno == logging.DEBUG for r in framing)
        caplog.clear()
        assert (await _send(port, b"GET /fail HTTP/1.1\r\nHost: a\r\n\r\n")).startswith(
            b"HTTP/1.1 500"
        )
        assert any(r.levelno == logging.ERROR for r in caplog.records)
    finally:
        await server.stop()
