"""Serving certificates for the endpoints a manager serves over TLS.

Two sources, as in controller-runtime:
- a directory holding `tls.crt` and `tls.key` (its `CertDir`; in a cluster, a
  Secret the chart mounts, or one cert-manager issues);
- a self-signed certificate made at start, for localhost and 127.0.0.1, when
  there is no such directory (the metrics endpoint's default: what matters
  there is that the traffic, bearer tokens included, is encrypted; scrapers
  skip verification, as kubebuilder's ServiceMonitor does).
The admission webhook needs the first: the API server verifies it against the
webhook configuration's caBundle.

A directory's certificate is reloaded when its files change, with
controller-runtime's certwatcher semantics: no restart, connections already
open keep the certificate they began with, new ones get the new pair. The
files are compared by content, read through their names, so Kubernetes'
Secret volumes (which swap a `..data` symlink to a new directory in one
rename) and plain overwrites (an admin's `cp`, a hostPath) are both seen,
on the first TLS handshake after the change, looking at most once a second
(see `CertWatcher`). A new pair that does not load (half-written, a key that
does not match) keeps the previous certificate serving; it is logged once as
a WARNING and loaded as soon as the files change again into a valid pair.
A self-signed certificate lives as long as the process: nothing to reload.

Every look at the files is counted, process-wide, in `CERTIFICATE_READS`
(controller-runtime's `certwatcher_read_certificate_total` and
`certwatcher_read_certificate_errors_total`, which the metrics serve).
"""

import datetime
import hashlib
import ipaddress
import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("wukong.runtime.servingcert")

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
# How often, at most, a handshake looks at the files (controller-runtime polls every 10 s).
RELOAD_CHECK_INTERVAL = 1.0
_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)


class CertificateError(Exception):
    """A certificate directory whose tls.crt and tls.key cannot be loaded."""


class CertificateReads:
    """How often the certificate watchers read their pair, and how many reads failed.

    A read is one look at the files: the first load, and each check after the
    interval. It fails when it leaves the files' pair unserved (unreadable,
    not a valid pair, or changing while loaded). Counted from any thread: the
    metrics endpoint's handshakes run on its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.errors = 0

    def count(self, *, failed: bool) -> None:
        with self._lock:
            self.total += 1
            self.errors += 1 if failed else 0


#: The reads of every `CertWatcher` of this process (process-wide, as
#: controller-runtime's certwatcher counters are).
CERTIFICATE_READS = CertificateReads()


def load_serving_certificate(cert_dir: Path) -> ssl.SSLContext:
    """A TLS server context from `cert_dir`/tls.crt and tls.key (controller-runtime's CertDir),
    reloaded when they change (see the module's docstring). `CertificateError` when the
    pair cannot be loaded now."""
    return CertWatcher(cert_dir).context


class CertWatcher:
    """Serves the pair in a directory, switching to a new pair when the files change.

    Checked on the TLS handshake, at most every `RELOAD_CHECK_INTERVAL`: the
    context's `sni_callback` runs for every ClientHello (with or without a
    server name), looks at the files when the interval has passed, and hands
    the handshake the newest context that loaded (`sslobj.context = ...`).
    Why there and not in a polling task or on inotify: a handshake is the only
    moment a certificate is used, so the first connection after a change gets
    the new one without a task whose lifetime every server (the manager's
    webhook, the metrics thread) would have to manage, and reading the content
    through the file names sees a Secret volume's `..data` symlink swap that an
    inotify watch on the names misses. Connections already open keep their
    context: nothing is dropped.
    """

    def __init__(self, cert_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._dir = cert_dir
        self._clock = clock
        for attempt in range(3):
            try:
                self._current, self._loaded, _ = _load_pair(cert_dir)
            except CertificateError as exc:
                CERTIFICATE_READS.count(failed=True)
                if attempt == 2 or not isinstance(exc, _ChangedWhileLoading):
                    raise
            else:
                CERTIFICATE_READS.count(failed=False)
                break
        self._rejected: bytes | None = None  # content that did not load (warned once)
        self._checked = clock()
        self.context = self._current  # what the server is given; its callback swaps
        self.context.sni_callback = self._on_handshake

    def _on_handshake(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        try:
            self.check()
        except Exception:  # an exception would fail the handshake: keep serving instead
            log.warning("cannot check the serving certificate in %s", self._dir, exc_info=True)
        if self._current is not context:
            connection.context = self._current

    def check(self) -> None:
        """Load the pair if the interval has passed since the last look and the files changed."""
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_INTERVAL:
            return
        self._checked = now
        served = False
        try:
            served = self._reload()
        finally:
            CERTIFICATE_READS.count(failed=not served)

    def _reload(self) -> bool:
        """Load the files' pair if it changed; whether it is the pair served now."""
        try:
            digest = _digest(*_read_pair(self._dir))
        except CertificateError as exc:
            if self._rejected != _UNREADABLE:
                self._rejected = _UNREADABLE
                log.warning("%s: still serving the previous certificate", exc)
            return False
        # A pair that failed is retried when its content changes: the same bytes fail alike.
        if digest in (self._loaded, self._rejected):
            return digest == self._loaded
        try:
            context, digest, cert = _load_pair(self._dir)
        except _ChangedWhileLoading:
            log.debug("the serving certificate in %s changed while loading it", self._dir)
            return False
        except CertificateError as exc:
            self._rejected = digest
            log.warning("%s: still serving the previous certificate", exc)
            return False
        self._current, self._loaded, self._rejected = context, digest, None
        log.info("serving a new certificate from %s: %s", self._dir, _describe(cert))
        return True


class _ChangedWhileLoading(CertificateError):
    pass


_UNREADABLE = b"unreadable"  # never a SHA-256 digest (32 bytes)


def _read_pair(cert_dir: Path) -> tuple[bytes, bytes]:
    try:
        return (cert_dir / CERT_FILE).read_bytes(), (cert_dir / KEY_FILE).read_bytes()
    except OSError as exc:
        message = f"cannot load {CERT_FILE} and {KEY_FILE} from {cert_dir}: {exc}"
        raise CertificateError(message) from exc


def _digest(cert: bytes, key: bytes) -> bytes:
    return hashlib.sha256(len(cert).to_bytes(8, "big") + cert + key).digest()


def _load_pair(cert_dir: Path) -> tuple[ssl.SSLContext, bytes, bytes]:
    """A context of the pair, the digest of what it loaded, and the certificate's PEM.

    `ssl` loads only from files: their content is read before and after, and a
    change in between (a swap under way) is `_ChangedWhileLoading`, so the
    digest always names what the context holds.
    """
    before = _read_pair(cert_dir)
    context = _server_context()
    failure = None
    try:
        context.load_cert_chain(str(cert_dir / CERT_FILE), str(cert_dir / KEY_FILE))
    except (OSError, ssl.SSLError) as exc:
        failure = f"cannot load {CERT_FILE} and {KEY_FILE} from {cert_dir}: {exc}"
    if _read_pair(cert_dir) != before:
        raise _ChangedWhileLoading(f"{CERT_FILE} and {KEY_FILE} in {cert_dir} changed")
    if failure is not None:
        raise CertificateError(failure)
    return context, _digest(*before), before[0]


def _describe(pem: bytes) -> str:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "(not parsed)"
    expires = certificate.not_valid_after_utc.isoformat()
    return f"serial {certificate.serial_number:x}, expires {expires}"


def certificate_dir(explicit: Path | None, *, default: Path) -> Path | None:
    """Where the certificate is: `explicit` when given (a `--*-cert-dir` flag), else
    `default` when it holds one, else None."""
    if explicit is not None:
        return explicit
    if (default / CERT_FILE).is_file() and (default / KEY_FILE).is_file():
        return default
    return None


def self_signed_context(common_name: str) -> ssl.SSLContext:
    """A TLS server context with a new key and a certificate signed by itself.

    The key never leaves this process: `ssl` loads certificates only from
    files, so they are written to a private temporary directory that is gone
    before this returns.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + _SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    context = _server_context()
    with tempfile.TemporaryDirectory(prefix="wukong-cert-") as directory:  # mode 0700
        cert_path, key_path = Path(directory, CERT_FILE), Path(directory, KEY_FILE)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(str(cert_path), str(key_path))
    return context


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
