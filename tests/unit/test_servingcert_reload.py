"""A certificate directory's pair is reloaded under a running HTTPS server (certwatcher).

A real `HttpServer` serves with `load_serving_certificate(dir)`; the test swaps
the files as a Secret volume does (a new directory, then one rename of the
`..data` symlink) and as a plain overwrite does, and reads the certificate
served to each new connection, while a connection opened before keeps
answering on its own certificate. Bad pairs leave the previous one serving.
"""

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from tests.certificates import issue
from wukong.runtime import _servingcert
from wukong.runtime.serving import HttpServer, load_serving_certificate


def make_pair(serial: int) -> tuple[bytes, bytes]:
    """A self-signed (certificate, key) PEM pair with `serial`."""
    issued = issue(f"serial-{serial}", serial=serial)
    return issued.cert_pem, issued.key_pem


def secret_volume_update(volume: Path, pair: tuple[bytes, bytes], version: int) -> None:
    """Write `pair` as the kubelet updates a Secret volume: a new timestamped directory,
    `..data` re-pointed at it by one rename; tls.crt and tls.key link through `..data`."""
    payload = volume / f"..2026_12_04_{version:06d}"
    payload.mkdir()
    (payload / "tls.crt").write_bytes(pair[0])
    (payload / "tls.key").write_bytes(pair[1])
    staging = volume / "..data_tmp"
    staging.symlink_to(payload.name)
    os.rename(staging, volume / "..data")  # atomic
    for name in ("tls.crt", "tls.key"):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_servingcert, "RELOAD_CHECK_INTERVAL", 0.05)


async def _wait_past_interval() -> None:
    await asyncio.sleep(0.1)


Serve = Callable[[Path], Awaitable[int]]  # starts an HTTPS server on a directory: its port


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[HttpServer] = []

    async def start(cert_dir: Path) -> int:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        server = HttpServer(routes={"/hello": hello})
        servers.append(server)
        return await server.start("127.0.0.1:0", ssl_context=load_serving_certificate(cert_dir))

    yield start
    for server in servers:
        await server.stop()


class Connection:
    """One kept-alive HTTPS connection: the certificate it got, and requests on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.serial = x509.load_der_x509_certificate(der).serial_number

    @classmethod
    async def open(cls, port: int) -> "Connection":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test reads what is served, whoever signed it
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer)

    async def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        """GET `path` on this connection (HTTP/1.1 keep-alive): the status and the body."""
        auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
        self._writer.write(request.encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, (await self._reader.readexactly(length)).decode()

    async def hello(self) -> str:
        status, body = await self.get("/hello")
        return f"{status} {body}"

    def close(self) -> None:
        self._writer.close()


async def served_serial(port: int) -> int:
    connection = await Connection.open(port)
    try:
        assert await connection.hello() == "200 hello"
        return connection.serial
    finally:
        connection.close()


async def test_a_secret_volume_update_is_served_to_new_connections_old_ones_keep_going(
    tmp_path: Path, serve: Serve
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    secret_volume_update(volume, make_pair(1), version=1)
    port = await serve(volume)
    before = await Connection.open(port)
    assert before.serial == 1
    assert await before.hello() == "200 hello"

    secret_volume_update(volume, make_pair(2), version=2)
    await _wait_past_interval()
    assert await served_serial(port) == 2
    # The connection opened before the swap is still up, on its own certificate.
    assert await before.hello() == "200 hello"
    assert before.serial == 1
    before.close()

    secret_volume_update(volume, make_pair(3), version=3)
    await _wait_past_interval()
    assert await served_serial(port) == 3


async def test_a_plain_overwrite_is_served(tmp_path: Path, serve: Serve) -> None:
    cert, key = make_pair(10)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = await serve(tmp_path)
    assert await served_serial(port) == 10
    cert, key = make_pair(11)
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "tls.crt").write_bytes(cert)
    await _wait_past_interval()
    assert await served_serial(port) == 11


async def test_checks_are_at_most_once_per_interval(
    tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_servingcert, "RELOAD_CHECK_INTERVAL", 3600.0)
    cert, key = make_pair(20)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = await serve(tmp_path)
    cert, key = make_pair(21)
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "tls.crt").write_bytes(cert)
    assert await served_serial(port) == 20  # not looked at yet: no file reads per handshake


async def test_a_bad_new_pair_keeps_the_old_certificate_and_is_warned_once(
    tmp_path: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = make_pair(30)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = await serve(tmp_path)
    caplog.set_level(logging.INFO, logger="wukong.runtime.servingcert")

    # A key that does not match the certificate.
    new_cert, new_key = make_pair(31)
    (tmp_path / "tls.crt").write_bytes(new_cert)
    for _ in range(3):
        await _wait_past_interval()
        assert await served_serial(port) == 30
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "still serving the previous certificate" in warnings[0].getMessage()

    # Half-written: another change, another warning, still the old certificate.
    (tmp_path / "tls.key").write_bytes(new_key)
    (tmp_path / "tls.crt").write_bytes(new_cert[: len(new_cert) // 2])
    for _ in range(2):
        await _wait_past_interval()
        assert await served_serial(port) == 30
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2

    # Missing (a file being replaced): warned once, the old certificate serves.
    (tmp_path / "tls.crt").unlink()
    for _ in range(2):
        await _wait_past_interval()
        assert await served_serial(port) == 30
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3

    # Complete: picked up.
    (tmp_path / "tls.crt").write_bytes(new_cert)
    await _wait_past_interval()
    assert await served_serial(port) == 31
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("serving a new certificate" in m and "serial 1f" in m for m in infos), infos


def test_each_look_at_the_files_is_a_counted_read(tmp_path: Path) -> None:
    reads = _servingcert.CERTIFICATE_READS
    start = (reads.total, reads.errors)

    def counted() -> tuple[int, int]:
        return reads.total - start[0], reads.errors - start[1]

    cert, key = make_pair(40)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    now = [0.0]
    watcher = _servingcert.CertWatcher(tmp_path, clock=lambda: now[0])
    assert counted() == (1, 0)  # the first load
    watcher.check()
    assert counted() == (1, 0)  # within the interval: no look
    now[0] += 1
    watcher.check()
    assert counted() == (2, 0)  # unchanged: read, and still the pair served

    new_cert, new_key = make_pair(41)
    (tmp_path / "tls.crt").write_bytes(new_cert)  # the old key does not match it
    for expected in ((3, 1), (4, 2)):  # the same bad pair fails each read alike
        now[0] += 1
        watcher.check()
        assert counted() == expected
    (tmp_path / "tls.key").write_bytes(new_key)
    now[0] += 1
    watcher.check()
    assert counted() == (5, 2)
    (tmp_path / "tls.key").unlink()
    now[0] += 1
    watcher.check()
    assert counted() == (6, 3)

    with pytest.raises(_servingcert.CertificateError):
        _servingcert.CertWatcher(tmp_path)
    assert counted() == (7, 4)
