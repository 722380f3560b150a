"""Memory admission: a request reserves what decoding its body may cost before the body is
read, so that the process's peak stays inside its memory limit at the worst allowed inputs.

Two steps. Before the body is read: its length (declared; the limit when unknown) twice, plus a
fixed allowance. Once read, before it is decoded: what decoding it may cost, counted from the
bytes themselves at C speed, with per-item costs measured (tracemalloc peaks through the data
plane, bench-free: see `COSTS`) at the worst bodies each type allows: JSON is charged per value
separator, per opened list or object and per string (`[[],[],...]` costs ~110x its bytes,
`[0.5,0.5,...]` ~29x, while `[0.123456789,...]` is ~12x), binary tensors per element (a UINT8
element becomes a float64 and an output row: ~74x), CSV per byte (streamed: ~14x).
REQUEST_MEMORY_MB bounds the sum: many small requests run at once, large ones take turns. A
request that does not fit waits up to ADMISSION_WAIT_S, then gets a retryable 503; one that
could never fit (its cost alone is over the budget) gets a 413 saying so. Requests without a
body (GETs) are not counted.

Once read, a body's reservation grows to its whole cost in one step: decoding it and what the
runtime allocates to predict its elements (counted from the bytes, an upper bound; a batch is
predicted PREDICT_SLICE_ELEMENTS values at a time, so at most one slice's worth), so that no
request waits for memory while holding some. A request that held its read reservation while
waiting for its decoding one, or its decoding one while waiting to predict, starved the others
doing the same: three large bodies at once each held a share, none could grow, all got 503s.
Growing takes the difference at once when it fits, else gives the share back and waits for the
whole cost like a new request; while it waits its body (at most MAX_BODY_BYTES per request in
flight) is outside the budget, which the memory limit's margin covers.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

from . import metrics
from .errors import InferError, ModelNotReady, PayloadTooLarge

PREDICT_BYTES_PER_ELEMENT = 32
"""What onnxruntime allocates while predicting, per input element (RSS high-water mark over
10^4-10^6-row batches of the example models, arena off: 16-17 bytes; doubled for models with
wider intermediates). Reserved around `predict`, beside the decoding's reservation."""
PREDICT_SLICE_ELEMENTS = 2**18
"""A batch is predicted this many input values at a time (the data plane's slices): what the
runtime allocates is bounded by a slice (8 MiB at 32 bytes a value), not by the batch."""
COSTS = {"byte": 2, "json_separator": 120, "json_open": 240, "json_string": 210, "csv_byte": 16,
         "binary_element": 80}
"""Peak bytes held while decoding and answering (measured with tracemalloc on the wine model,
2-8 MiB bodies, rounded up): per body byte (the body and a copy), per JSON `,` (a value: its
object, its list slot, its flattened and numpy copies), per JSON `[`/`{` (a container), per
JSON string (`"`, counted twice per string), per CSV byte, per binary tensor element."""
FACTORS = {"json": 2, "csv": COSTS["csv_byte"], "binary": 2}
"""Before the body is read: bytes per body byte (reading it; a CSV body's decoding, which is
known from its length alone, so that a CSV body is read only once it can be decoded)."""
FIXED_BYTES = 256 * 1024
ADMISSION_WAIT_S = 1.0
PREPAID: contextvars.ContextVar[int] = contextvars.ContextVar("predict_prepaid", default=0)
"""Predict memory the request being answered reserved with its body (set by the data plane
around its handling): `hold` takes nothing more for a batch it covers."""
ON_EVENT_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("on_event_loop", default=False)
"""Set while the ASGI adapter answers a small request on the event loop itself: a reservation
there never waits (it would stall every request), it is taken at once or answered 503."""


def kind(headers: dict) -> str:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if "inference-header-content-length" in headers:
        return "binary"
    return "csv" if media == "text/csv" else "json"


class Admission:
    def __init__(self, budget_bytes: int, retry_after_s: int = 1, wait_s: float = ADMISSION_WAIT_S):
        self.budget = budget_bytes
        self.retry_after_s = retry_after_s
        self.wait_s = wait_s
        self.used = 0
        self._cond = threading.Condition()

    def cost(self, length: int, headers: dict) -> int:
        """Before the body is read."""
        return FIXED_BYTES + length * FACTORS[kind(headers)] if length else 0

    def decoding_cost(self, body: bytes, headers: dict) -> int:
        """What decoding this body may cost, from its bytes (C-speed counts, ~1 ms per MiB)."""
        if not body:
            return 0
        n = len(body)
        what = kind(headers)
        if what == "csv":
            return FIXED_BYTES + n * COSTS["csv_byte"]
        if what == "binary":
            return FIXED_BYTES + n * COSTS["byte"] + _binary_elements(body, headers) * COSTS["binary_element"]
        return (FIXED_BYTES + n * COSTS["byte"] + body.count(b",") * COSTS["json_separator"]
                + (body.count(b"[") + body.count(b"{")) * COSTS["json_open"] + body.count(b'"') // 2 * COSTS["json_string"])

    def predict_bound(self, body: bytes, headers: dict) -> int:
        """What predicting this body's elements may cost at most: its elements counted from the
        bytes (a CSV field per `,` or line; a JSON value per `,` or `[`; a binary tensor's
        elements by the smallest item size, its JSON header's values as JSON)."""
        if not body:
            return 0
        what = kind(headers)
        if what == "csv":
            elements = body.count(b",") + body.count(b"\n") + 1
        elif what == "binary":
            try:
                length = min(len(body), max(0, int(headers.get("inference-header-content-length", "0"))))
            except ValueError:
                length = 0
            head = body[:length]
            elements = _binary_elements(body, headers) + head.count(b",") + head.count(b"[")
        else:
            elements = body.count(b",") + body.count(b"[")
        return min(elements, PREDICT_SLICE_ELEMENTS) * PREDICT_BYTES_PER_ELEMENT

    def check(self, cost: int, length: int, headers: dict) -> InferError | None:
        """The refusal of a request that can never fit, else None."""
        if cost <= self.budget:
            return None
        metrics.ADMISSION_REFUSED.labels("too_large").inc()
        return PayloadTooLarge(f"a {kind(headers)} body of {length} bytes would take ~{cost / 2**20:.0f} MB to decode and "
                               f"predict, over REQUEST_MEMORY_MB ({self.budget / 2**20:.0f} MB): send smaller batches")

    def try_acquire(self, cost: int) -> bool:
        with self._cond:
            if self.used + cost > self.budget:
                return False
            self.used += cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            return True

    def acquire(self, cost: int, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)
        with self._cond:
            while self.used + cost > self.budget:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            return True

    def try_grow(self, held: int, need: int) -> bool:
        """Hold `need` instead of `held` if it fits now (less: the excess is given back at once;
        more: taken at once or nothing changes)."""
        if need <= held:
            self.release(held - need)
            return True
        return self.try_acquire(need - held)

    def grow(self, held: int, need: int, timeout: float | None = None) -> bool:
        """Hold `need` instead of `held`, without waiting while holding: the difference at once if
        it fits, else `held` is given back and `need` waited for whole. False: nothing is held."""
        if self.try_grow(held, need):
            return True
        self.release(held)
        return self.acquire(need, timeout)

    def release(self, cost: int) -> None:
        if not cost:
            return
        with self._cond:
            self.used -= cost
            metrics.REQUEST_MEMORY_RESERVED.set(self.used)
            self._cond.notify_all()

    def predict_cost(self, rows: Any) -> int:
        """What predicting `rows` allocates: one slice's worth (a slice is at least one row)."""
        shape: tuple[int, ...] = tuple(getattr(rows, "shape", ()))
        row = int(shape[1]) if len(shape) == 2 else 0
        return min(int(getattr(rows, "size", 0)), max(PREDICT_SLICE_ELEMENTS, row)) * PREDICT_BYTES_PER_ELEMENT

    def hold(self, cost: int, what: str) -> int:
        """Reserve `cost` (blocking up to ADMISSION_WAIT_S) or raise the 413/503 that says why;
        what was taken (0 when the request reserved it with its body: release that)."""
        if cost <= PREPAID.get():
            return 0
        if cost > self.budget:
            metrics.ADMISSION_REFUSED.labels("too_large").inc()
            raise PayloadTooLarge(f"{what} would take ~{cost / 2**20:.0f} MB to predict, over REQUEST_MEMORY_MB "
                                  f"({self.budget / 2**20:.0f} MB): send smaller batches")
        if not (self.try_acquire(cost) if ON_EVENT_LOOP.get() else self.acquire(cost)):
            raise self.busy()
        return cost

    def busy(self) -> InferError:
        metrics.ADMISSION_REFUSED.labels("busy").inc()
        return ModelNotReady("the server is decoding as many large requests as its memory allows; retry",
                             self.retry_after_s)


def _binary_elements(body: bytes, headers: dict) -> int:
    """Elements of the binary tensors: their bytes over the smallest item size declared (the
    JSON header is parsed again by the protocol; here only its datatypes are read)."""
    try:
        length = int(headers.get("inference-header-content-length", "0"))
        import orjson

        doc = orjson.loads(body[:length]) if 0 < length <= len(body) else {}
        sizes = [ITEM_SIZES.get(str(t.get("datatype")), 1) for t in doc.get("inputs", []) if isinstance(t, dict)]
    except (ValueError, TypeError, AttributeError):
        sizes = []
    return (len(body) - max(0, length if sizes else 0)) // min(sizes or [1])


ITEM_SIZES = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "INT32": 4, "UINT32": 4,
              "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8, "BYTES": 5}
