"""The writers' merge patch (merge_patch.py) against the API double: the same request and the
same answer as the generated kubernetes client's, its errors as the client's own ApiException,
one kept-alive connection per writer thread, and a connection the server closed is reopened."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localmode.kube_api_double import KubeApiDouble
from scale.knative_api import ApiSkip, KnativeApi
from scale.merge_patch import MergePatcher

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
