"""The writers' merge patch (merge_patch.py) against the API double: the same request and the
same answer as the generated kubernetes client's, its errors as the client's own ApiException,
one kept-alive connection per writer thread, and a connection the server closed is reopened."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localmode.kube_api_double import KubeApiDouble
from scale.knative_api import ApiSkip, KnativeApi
from scale.merge_patch import MAX_HEAD, MAX_HEADERS, MergePatcher

SERVING = ("serving.knative.dev", "v1")
MIN = "autoscaling.knative.dev/min-scale"


@pytest.fixture
def double():
    d = KubeApiDouble()
    d.add_namespace("ns")
    for k in range(3):
        d.add_service("ns", f"svc-{k}", {"predictive-scaling.io/enabled": "true"})
    yield d
    d.close()


def revisions(double: KubeApiDouble) -> list[dict]:
    return [o for key, o in double.objects.items() if key[1] == "revisions" and key[2] == "ns"]


def test_the_same_request_and_answer_as_the_generated_client(double):
    configuration = client.Configuration(host=double.url)
    generated = client.CustomObjectsApi(client.ApiClient(configuration))
    lean = MergePatcher(client.ApiClient(configuration))
    assert lean.usable
    first, second = (r["metadata"]["name"] for r in revisions(double)[:2])
    body = {"metadata": {"annotations": {MIN: "3", "x/removed": None}}}
    theirs = generated.patch_namespaced_custom_object(*SERVING, "ns", "revisions", first, body)
    mine = lean.patch(*SERVING, "ns", "revisions", second, body)
    a, b = double.requests[-2:]
    assert (a.method, a.verb, a.group, a.resource, a.body, a.status) == (b.method, b.verb, b.group, b.resource, b.body, b.status)
    assert b.name == second and b.method == "PATCH"
    assert mine == double.get(SERVING[0], "revisions", "ns", second)
    assert mine["metadata"]["annotations"][MIN] == theirs["metadata"]["annotations"][MIN] == "3"
    lean.close()


def test_errors_are_the_client_s_api_exception_and_the_api_s_outcomes(double):
    api = KnativeApi(double.url, retries=1, backoff_s=0.01, reads="list")
    name = revisions(double)[0]["metadata"]["name"]
    with pytest.raises(ApiException) as raised:
        api._patcher.patch(*SERVING, "ns", "revisions", "no-such-revision", {"metadata": {"annotations": {MIN: "1"}}})
    assert raised.value.status == 404 and "no-such-revision" in raised.value.body
    # a stale resourceVersion: 409, re-read, patched with the fresh one
    stale = revisions(double)[0]["metadata"]["resourceVersion"]
    double.touch(SERVING[0], "revisions", "ns", name, {"someone/else": "1"})
    written = api.patch_annotations("ns", name, {MIN: "2"}, stale, legacy=False)
    assert written["metadata"]["annotations"][MIN] == "2" and written["metadata"]["annotations"]["someone/else"] == "1"
    assert [r.status for r in double.requests if r.method == "PATCH"][-2:] == [409, 200]
    # RBAC's 403 is a skip, as through the generated client
    double.fail(lambda r: r.method == "PATCH", 403)
    with pytest.raises(ApiSkip) as skipped:
        api.patch_annotations("ns", name, {MIN: "4"}, None, legacy=False)
    assert skipped.value.status == 403
    api.close()


def test_one_connection_per_writer_thread_and_a_closed_one_is_reopened():
    """A server that counts connections and closes every kept-alive one after its second answer
    without saying so (as an API server restarting, or an idle timeout, does)."""
    opened, answered = [], []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            opened.append(self.client_address)
            self.served = 0

        def do_PATCH(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            answered.append(self.headers["Content-Type"])
            body = b'{"metadata":{"name":"r"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.served += 1
            if self.served == 2:
                self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        patcher = MergePatcher(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")))
        for _ in range(6):
            assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {"name": "r"}}
        assert len(answered) == 6 and set(answered) == {"application/merge-patch+json"}
        assert len(opened) == 3  # two answers per connection, then a new one: none lost
        worker = threading.Thread(target=patcher.patch, args=(*SERVING, "ns", "revisions", "r", {"metadata": {}}))
        worker.start()
        worker.join()
        assert len(opened) == 4  # another thread: its own connection
        patcher.close()
    finally:
        server.shutdown()
        server.server_close()


class Scripted:
    """A raw HTTP/1.1 server answering each request with the next of `answers` (bytes, sent as
    they are), closing the connection after an answer when asked: what an API server's Go
    net/http may send (chunked bodies, interim 100 answers, `Connection: close`)."""

    def __init__(self, answers: list[tuple[bytes | list[bytes], bool]], context=None):
        import socket
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_side=True)
                except OSError:  # the client refused our certificate
                    sock.close()
                    continue
            reader = sock.makefile("rb")
            while self.answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        break
                    head += line
                if not head:
                    break
                length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                self.requests.append(head + reader.read(length))
                answer, close = self.answers.pop(0)
                if isinstance(answer, list):  # in pieces, each its own segment on the wire
                    for piece in answer:
                        sock.sendall(piece)
                        time.sleep(0.002)
                else:
                    sock.sendall(answer)
                if close:
                    break
            reader.close()
            sock.close()

    def close(self) -> None:
        self.listener.close()


def patcher_for(url: str, **settings) -> MergePatcher:
    configuration = client.Configuration(host=url)
    for key, value in settings.items():
        setattr(configuration, key, value)
    return MergePatcher(client.ApiClient(configuration))


def test_answers_in_chunks_after_an_interim_100_and_closed_by_the_server_are_read_whole():
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"a;ext=1\r\n{\"metadata\r\n5\r\n\":{}}\r\n0\r\nX-Trailer: 1\r\n\r\n")
    with_close = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"metadata\":{}}"
    until_close = b"HTTP/1.1 200 OK\r\n\r\n{\"metadata\":{\"a\":1}}"
    server = Scripted([(chunked, False), (with_close, False), (until_close, True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        assert patcher.patch(*SERVING, "ns", "revisions", "r-1", {"metadata": {}}) == {"metadata": {}}
        assert patcher.patch(*SERVING, "ns", "revisions", "r-2", {"metadata": {}}) == {"metadata": {}}
        assert patcher.patch(*SERVING, "ns", "revisions", "r-3", {"metadata": {}}) == {"metadata": {"a": 1}}
        assert server.connections == 2  # the connection the server said it closes was not reused
        first = server.requests[0]
        assert first.startswith(b"PATCH /apis/serving.knative.dev/v1/namespaces/ns/revisions/r-1 HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:%d\r\n" % server.port in first
        assert b"\r\nContent-Type: application/merge-patch+json\r\n" in first and first.endswith(b'\r\n\r\n{"metadata":{}}')
        patcher.close()
    finally:
        server.close()


def test_an_error_answer_is_the_client_s_api_exception_and_a_broken_one_an_http_error():
    conflict = b'{"kind":"Status","code":409,"message":"the object has been modified"}'
    server = Scripted([(b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(conflict), conflict), False),
                       (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"short\"", True),
                       (b"NOT HTTP\r\n\r\n", True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        with pytest.raises(ApiException) as raised:
            patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        assert raised.value.status == 409 and raised.value.reason == "Conflict"
        assert "modified" in raised.value.body and raised.value.headers["content-type"] == "application/json"
        with pytest.raises(http.client.IncompleteRead):
            patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})  # the body was cut short
        with pytest.raises(http.client.BadStatusLine):
            patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        patcher.close()
    finally:
        server.close()


def test_an_answer_split_anywhere_across_reads_is_read_whole():
    """The reason, a header, a chunk size and the body each cut across the socket's reads."""
    answer = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 409 Conf" b"lict\r\nContent-Ty" b"pe: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nf;x=y\r\n{\"code\":409,\"m\"\r\n9\r\n:\"stale\"}\r\n0\r\n\r\n")
    pieces = [answer[k:k + 7] for k in range(0, len(answer), 7)]
    server = Scripted([(pieces, False), (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"metadata\":{}}", True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        with pytest.raises(ApiException) as raised:
            patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        assert raised.value.status == 409 and raised.value.reason == "Conflict"
        assert raised.value.body == '{"code":409,"m":"stale"}' and raised.value.headers["content-type"] == "application/json"
        assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {}}
        assert server.connections == 1  # the chunked answer left the connection reusable
        patcher.close()
    finally:
        server.close()


def test_malformed_or_oversized_answers_are_http_errors_and_the_connection_is_not_reused():
    """What http.client would accept or crash on, the parser refuses: a header folded onto a
    second line (obs-fold), two Content-Lengths, an unasked protocol switch, a head over the
    limit, too many headers. Each is an HTTPException and the next patch opens a new connection."""
    ok = (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"metadata\":{}}", False)
    broken = [
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * MAX_HEAD + b"\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * (MAX_HEADERS + 1) + b"Content-Length: 2\r\n\r\n{}",
    ]
    answers: list[tuple[bytes | list[bytes], bool]] = []
    for answer in broken:
        answers += [(answer, False), ok]
    server = Scripted(answers)
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        for k in range(len(broken)):
            with pytest.raises(http.client.HTTPException):
                patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
            assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {}}
            assert server.connections == k + 2
        patcher.close()
    finally:
        server.close()


def test_bytes_after_the_answer_leave_it_standing_but_the_connection_is_not_reused():
    """A server that sends more than the one answer asked for (a stray second answer, or
    garbage): the answer is the patch's, and the next request goes on a new connection rather
    than read the leftover as its answer."""
    body = b'{"metadata":{"n":1}}'
    first = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = Scripted([(first + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
                       (first + b"garbage", False),
                       (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"metadata\":{}}", True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {"n": 1}}
        assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {"n": 1}}
        assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {}}
        assert server.connections == 3
        patcher.close()
    finally:
        server.close()


def test_a_connection_closed_inside_the_head_or_after_an_interim_answer_is_an_incomplete_read():
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Le", True), (b"HTTP/1.1 100 Continue\r\n\r\n", True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        for _ in range(2):
            with pytest.raises(http.client.IncompleteRead):
                patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        patcher.close()
    finally:
        server.close()


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent():
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", True)])
    try:
        patcher = patcher_for(f"http://127.0.0.1:{server.port}")
        patcher.api_client.default_headers["X-Injected"] = "a\r\nX-Evil: 1"
        with pytest.raises(ValueError):
            patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        assert server.requests == []
        patcher.close()
    finally:
        server.close()


def test_https_with_the_client_s_ca_file_and_bearer_token(tmp_path):
    import ssl
    import subprocess
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"metadata\":{}}", True)] * 2, context)
    try:
        patcher = patcher_for(f"https://127.0.0.1:{server.port}", ssl_ca_cert=str(cert),
                              api_key={"authorization": "token-1"}, api_key_prefix={"authorization": "Bearer"})
        assert patcher.usable
        assert patcher.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}}) == {"metadata": {}}
        assert b"\r\nauthorization: Bearer token-1\r\n" in server.requests[0].replace(b"Authorization", b"authorization")
        patcher.close()
        # a CA that did not sign the server's certificate: refused, nothing sent
        other = patcher_for(f"https://127.0.0.1:{server.port}")
        with pytest.raises(ssl.SSLError):
            other.patch(*SERVING, "ns", "revisions", "r", {"metadata": {}})
        other.close()
        assert len(server.requests) == 1
    finally:
        server.close()
