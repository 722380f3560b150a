"""`make demo-infer`: serve the wine model and call it through each
protocol, printing each request as the curl a user would type and the answer they would see."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
ROW = [14.23, 1.71, 2.43, 15.6, 127.0, 2.8, 3.06, 0.28, 2.29, 5.64, 1.04, 3.92, 1065.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show(method: str, url: str, body: object | None = None, content_type: str = "application/json") -> None:
    if body is None:
        print(f"$ curl -s {url}")
        r = requests.request(method, url, timeout=10)
    else:
        data = body if isinstance(body, str) else json.dumps(body)
        if isinstance(body, str) and "\n" in body:  # as a shell user would type it
            shown = "--data-binary $'" + data.replace("\n", "\\n") + "'"
        else:
            shown = f"-d '{data}'"
        print(f"$ curl -s -H 'Content-Type: {content_type}' {url} {shown}")
        r = requests.request(method, url, data=data, headers={"Content-Type": content_type}, timeout=10)
    text = r.text.strip()
    print(f"HTTP {r.status_code}  {text if len(text) < 400 else text[:400] + ' ...'}\n")


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "functions" / "infer"), "LOG_LEVEL": "WARNING"}
    print(f"== starting the inference server: python -m infer.serve --model models/wine.onnx --port {port}")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infer.serve", "--model", str(ROOT / "models" / "wine.onnx"), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 60:
                sys.exit("the server did not become ready")
            time.sleep(0.05)
        print(f"   ready in {time.perf_counter() - started:.2f} s (model loaded, sha256 checked, warm-up done)\n")

        print("== Open Inference Protocol (KServe V2)")
        show("GET", f"{url}/v2/health/ready")
        show("GET", f"{url}/v2/models/wine")
        show("POST", f"{url}/v2/models/wine/infer", {
            "id": "demo-1",
            "inputs": [{"name": "input-0", "shape": [2, 13], "datatype": "FP64", "data": [ROW, ROW]}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        })
        print("== KServe V1")
        show("POST", f"{url}/v1/models/wine:predict", {"instances": [ROW]})
        print("== MLflow scoring protocol")
        show("POST", f"{url}/invocations", {"dataframe_split": {"columns": [f"f{i}" for i in range(13)], "data": [ROW]}})
        show("POST", f"{url}/invocations", "a,b,c,d,e,f,g,h,i,j,k,l,m\n" + ",".join(map(str, ROW)) + "\n", "text/csv")
        print("== a client's mistakes get a 4xx that says what was wrong")
        show("POST", f"{url}/v2/models/wine/infer", {"inputs": [{"name": "x", "shape": [1, 13], "datatype": "FP32", "data": ["a"] + ROW[1:]}]})
        show("POST", f"{url}/v1/models/wine:predict", {"instances": [ROW[:12]]})
        show("POST", f"{url}/invocations", "<xml/>", "text/xml")
        print("== Prometheus metrics (what the forecast function reads as this service's traffic)")
        print(f"$ curl -s {url}/metrics | grep infer_requests_total")
        for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
            if line.startswith("infer_requests_total"):
                print(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
