"""Memory admission: a request reserves what decoding its body may cost before the body is
read, so that the process's peak stays inside its memory limit at the worst allowed inputs.

The cost is the body's length (declared; the limit when unknown) times the worst decoding
factor measured for its content type (`make chaos`'s pool rows and tests/infer/
test_pool_limits.py drive the worst bodies each type allows: many tiny JSON values, nested
empty lists, text CSV cells, binary tensors), plus a fixed allowance for the request itself.
REQUEST_MEMORY_MB bounds the sum: many small requests run at once, large ones take turns. A
request that does not fit waits up to ADMISSION_WAIT_S, then gets a retryable 503; one that
could never fit (its cost alone is over the budget) gets a 413 saying the largest body of its
type that fits. Requests without a body (GETs) are not counted.
"""

from __future__ import annotations

import threading
import time

from . import metrics
from .errors import InferError, ModelNotReady, PayloadTooLarge

FACTORS = {"json": 28, "csv": 24, "binary": 4}
"""Peak bytes held while decoding, per byte of body (measured worst cases, rounded up: JSON of
`[[],[],...]` or `[0.5,0.5,...]`, CSV of distinct short text cells, binary FP64 tensors)."""
FIXED_BYTES = 256 * 1024
ADMISSION_WAIT_S = 1.0


def kind(headers: dict) -> str:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if "inference-header-content-length" in headers:
        return "binary"
    return "csv" if media == "text/csv" else "json"


class Admission:
    def __init__(self, budget_bytes: int, retry_after_s: int = 1):
        self.budget = budget_bytes
        self.retry_after_s = retry_after_s
        self.used = 0
        self._cond = threading.Condition()

    def cost(self, length: int, headers: dict) -> int:
        return FIXED_BYTES + length * FACTORS[kind(headers)] if length else 0

    def check(self, cost: int, length: int, headers: dict) -> InferError | None:
        """The refusal of a request that can never fit, else None."""
        if cost <= self.budget:
            return None
        metrics.ADMISSION_REFUSED.labels("too_large").inc()
        largest = max(0, (self.budget - FIXED_BYTES) // FACTORS[kind(headers)])
        return PayloadTooLarge(f"a {kind(headers)} body of {length} bytes would take ~{cost / 2**20:.0f} MB to decode, "
                               f"over REQUEST_MEMORY_MB: send at most {largest} bytes per request")

    def try_acquire(self, cost: int) -> bool:
        with self._cond:
            if self.used + cost > self.budget:
                return False
            self.used += cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            return True

    def acquire(self, cost: int, timeout: float = ADMISSION_WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + cost > self.budget:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            return True

    def release(self, cost: int) -> None:
        if not cost:
            return
        with self._cond:
            self.used -= cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            self._cond.notify_all()

    def busy(self) -> InferError:
        metrics.ADMISSION_REFUSED.labels("busy").inc()
        return ModelNotReady("the server is decoding as many large requests as its memory allows; retry",
                             self.retry_after_s)
