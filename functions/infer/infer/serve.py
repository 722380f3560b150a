"""Standalone server: the data plane's WSGI app under gunicorn, for local use, images and the benchmark.

    python -m infer.serve --model models/wine.onnx --port 8080
    python -m infer.serve --repository models --port 8080     # the model pool

gunicorn (WSGI) because it is the WSGI server Flask's deployment docs put first, its pre-fork
model uses every core of a node, and `preload_app` loads and warms the model once in the
master before forking: workers start with it in copy-on-write memory, so the cold start is one
model load however many workers there are. Workers are sync (one request at a time, connection
closed after it) by default: with threaded keep-alive workers a few long-lived client
connections (a load generator, or the queue-proxy in a pod) can all land on one worker and leave
the other cores idle, which make bench-infer measured as throughput swinging from 480 to 1,600
req/s between runs; closing connections lets the kernel spread requests over the workers. Configuration is the environment (see
`InferSettings`); --model sets MODEL_ROOT to the artifact's folder unless MODEL_ROOT is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infer.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="artifact to serve (sets MODEL_PATH, and MODEL_ROOT if unset)")
    parser.add_argument("--repository", help="model repository to serve as the pool (sets MODEL_REPOSITORY)")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    from .settings import cpu_share

    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", str(cpu_share()))))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", "1")))
    # gunicorn's worker heartbeat needs a writable directory: under readOnlyRootFilesystem, an
    # emptyDir mounted there (serving/infer-*.yaml mount one at /tmp and set WORKER_TMP_DIR).
    parser.add_argument("--worker-tmp-dir", default=os.environ.get("WORKER_TMP_DIR") or None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.model:
        artifact = Path(args.model).resolve()
        os.environ.setdefault("MODEL_ROOT", str(artifact.parent))
        os.environ["MODEL_PATH"] = str(artifact)
    if args.repository:
        os.environ["MODEL_REPOSITORY"] = str(Path(args.repository).resolve())
    pooled = bool(os.environ.get("MODEL_REPOSITORY", "").strip())
    if pooled:
        # One process holds the pool: its loaded models, its LRU and the repository API must be
        # one state (a load through one worker would not be loaded in another). Threads serve
        # requests concurrently; onnxruntime releases the GIL while it predicts.
        args.threads = args.threads if args.threads > 1 else 4 * max(1, args.workers)
        args.workers = 1
    # Small per-request matrices: BLAS threads only contend with the other workers. And the
    # model is loaded before gunicorn forks: a thread pool does not survive a fork, so each
    # worker runs onnxruntime on one thread; the workers (the CPU share) use the cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ["MODEL_THREADS"] = "1"
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Must be set before prometheus_client is imported (by infer.app) to take effect.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="infer-metrics-")

    from gunicorn.app.base import BaseApplication

    from fncommon import json_log
    from .app import start
    from .settings import InferSettings, SettingsError

    json_log.configure("infer", os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = InferSettings.from_env()
    except SettingsError as exc:
        sys.exit(f"infer: {exc}")
    app, served = start(settings)  # a refusal keeps the server up, not ready, answering 503 with the reason

    def post_worker_init(worker) -> None:
        """The pool's repository poll and control port run in the worker, which holds the pool
        (threads do not survive gunicorn's fork of the preloaded app)."""
        if hasattr(served, "start_background"):
            served.start_background(args.host)

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "gthread" if args.threads > 1 else "sync")
            self.cfg.set("threads", args.threads)
            self.cfg.set("preload_app", True)
            self.cfg.set("keepalive", 75)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("child_exit", _child_exit)
            if args.worker_tmp_dir:
                self.cfg.set("worker_tmp_dir", args.worker_tmp_dir)
            self.cfg.set("worker_exit", _worker_exit)
            self.cfg.set("post_worker_init", post_worker_init)

        def load(self):
            return app

    Server().run()


def _worker_exit(server, worker) -> None:
    """Leave the worker at once: interpreter finalization in a child forked after onnxruntime
    made its session can hang (measured: every worker stuck until the master's SIGKILL, 10 s),
    and a pod that takes the whole grace period to stop holds its node for nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


if __name__ == "__main__":
    main()
