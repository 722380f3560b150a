"""Merge patches over one keep-alive connection per writer thread, with the kubernetes client's
own configuration: its host, TLS files and verification, default headers and auth (the bearer
token, refreshed by the client's own hook).

Why not the generated client for this one call: a first event at 10,000 services is 10,000
patches (Kubernetes has no batch write), and the generated client's layers (parameter checks,
serialisation, urllib3's URL parsing and pool bookkeeping, deserialisation) cost about three
times the CPU of the request itself. Nor `http.client` under it: it builds a request header by
header and parses every answer's headers with the `email` package, ~200 us of CPU per patch
measured against the API double (2026-12-07), most of a first event's own work. Here one
request is one buffer and one `sendall`, and the answer is read from the socket's buffered
reader: the status line, the headers (only Content-Length, Transfer-Encoding and Connection
are used), and the body by its length, in chunks, or up to the close. The request on the wire
is the same: PATCH, `application/merge-patch+json`, the same path and headers (auth included).
Errors come back as the client's own `ApiException` (status, reason, body, headers), so callers
handle both paths alike; a broken answer is an `http.client.HTTPException`, a dropped connection
an `OSError`, as from `http.client`.

A configuration this path does not cover (a proxy, a TLS server name override) keeps the
generated client (`usable` is False).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

TIMEOUT_S = 30.0
"""A patch answered within this or failed (a transient: the event is retried)."""
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""What a keep-alive connection the server has closed meanwhile raises on its next request."""
MAX_LINE = 65536
"""Longest status, header or chunk-size line read (http.client's own limit)."""
MAX_HEADERS = 100
"""Most header lines in one answer (http.client's own limit)."""


class _Connection:
    """One kept-alive HTTP/1.1 connection: its socket (TLS when https) and a buffered reader."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None):
        sock = socket.create_connection((host, port), TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the request leaves at once
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class MergePatcher:
    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        configuration = api_client.configuration
        parts = urlsplit(configuration.host)
        self.usable = parts.scheme in ("http", "https") and not configuration.proxy \
            and not getattr(configuration, "tls_server_name", None)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._authority = parts.netloc.rsplit("@", 1)[-1]
        """The Host header: as the URL names the server (http.client sends the same)."""
        self._prefix = parts.path.rstrip("/")
        self._context = _tls_context(configuration) if self._https and self.usable else None
        self._collections: dict[tuple[str, str, str, str], str] = {}
        """(group, version, namespace, plural) -> its quoted path: 10,000 patches name few."""
        self._local = threading.local()
        self._open: list[_Connection] = []
        self._lock = threading.Lock()

    def patch(self, group: str, version: str, namespace: str, plural: str, name: str, body: dict) -> dict:
        """The patched object, or ApiException (any non-2xx answer); OSError and
        http.client.HTTPException when the connection fails (after one fresh reconnect when a
        kept-alive connection turned out closed)."""
        collection = self._collections.get((group, version, namespace, plural))
        if collection is None:
            if len(self._collections) >= 10_000:
                self._collections.clear()  # bounded whatever the namespaces
            collection = f"{self._prefix}/apis/{quote(group)}/{quote(version)}/namespaces/{quote(namespace)}/{quote(plural)}"
            self._collections[(group, version, namespace, plural)] = collection
        path = f"{collection}/{quote(name)}"
        headers = {**self.api_client.default_headers, "Content-Type": "application/merge-patch+json",
                   "Accept": "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"])
        payload = orjson.dumps(body)
        request = _request(path, self._authority, headers, payload)
        for attempt in (0, 1):
            connection, reused = self._connection()
            try:
                connection.sock.sendall(request)
                status, reason, answer_headers, data, will_close = _answer(connection.reader)
            except _STALE:
                self._drop(connection)
                if reused and attempt == 0:
                    continue  # the server closed it while idle: once more on a new connection
                raise
            except BaseException:
                self._drop(connection)
                raise
            if will_close:
                self._drop(connection)
            if 200 <= status < 300:
                return orjson.loads(data)
            error = ApiException(status=status, reason=reason)
            error.body = data.decode("utf-8", "replace")
            error.headers = answer_headers
            raise error
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for connection in self._open:
                connection.close()
            self._open.clear()

    def _connection(self) -> tuple[_Connection, bool]:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        connection = _Connection(self._host, self._port, self._context)
        self._local.connection = connection
        with self._lock:
            self._open.append(connection)
        return connection, False

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)


def _request(path: str, authority: str, headers: dict[str, str], payload: bytes) -> bytes:
    """The whole request, head and body, as one buffer. A header value carrying a line break
    is refused (as http.client does): it would end the header early."""
    head = [f"PATCH {path} HTTP/1.1", f"Host: {authority}"]
    for key, value in headers.items():
        value = str(value)
        if "\r" in value or "\n" in value or "\r" in key or "\n" in key or ":" in key:
            raise ValueError(f"invalid header {key!r}: it would end the request head early")
        head.append(f"{key}: {value}")
    head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def _line(reader: BinaryIO, what: str) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong(what)
    return line


def _answer(reader: BinaryIO) -> tuple[int, str, dict[str, str], bytes, bool]:
    """(status, reason, headers by lower-case name, body, whether the server closes the
    connection after it), read from the connection's buffered reader. Interim 1xx answers are
    passed over; the body is read by Content-Length, in chunks, or up to the close."""
    while True:
        line = _line(reader, "status line")
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        try:
            version, code, *rest = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            status = int(code)
        except ValueError:
            raise http.client.BadStatusLine(repr(line[:80])) from None
        if not version.startswith("HTTP/") or not 100 <= status <= 999:
            raise http.client.BadStatusLine(repr(line[:80]))
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = _line(reader, "header line")
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            key, value = key.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if status >= 200 or status == 101:
            break
    will_close = "close" in headers.get("connection", "").lower() or \
        (version == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower())
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise http.client.HTTPException(f"bad Content-Length {headers['content-length'][:40]!r}") from None
        body = _exactly(reader, length)
    elif status in (204, 304):
        body = b""
    else:
        body, will_close = reader.read(), True  # delimited by the close
    return status, (rest[0] if rest else ""), headers, body, will_close


def _exactly(reader: BinaryIO, length: int) -> bytes:
    data = reader.read(length)
    if len(data) < length:
        raise http.client.IncompleteRead(data, length - len(data))
    return data


def _chunked(reader: BinaryIO) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = _line(reader, "chunk size")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(chunks)) from None
        if size == 0:
            break
        chunks.append(_exactly(reader, size))
        _exactly(reader, 2)  # the chunk's CRLF
    while _line(reader, "trailer line") not in (b"\r\n", b"\n", b""):
        pass  # trailers: none is used
    return b"".join(chunks)


def _tls_context(configuration: client.Configuration) -> ssl.SSLContext:
    """What the client's urllib3 pool verifies: the CA file (or the system's), a client
    certificate when configured, hostname checks unless `verify_ssl` is off."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context
