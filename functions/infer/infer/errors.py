"""Errors as types: each one carries the HTTP status it maps to, rendered in one place (app.py).

A client's mistake is never a 500: everything the request can get wrong raises one of these
with a message that says what was wrong.
"""

from __future__ import annotations


class InferError(Exception):
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(InferError):
    status = 400


class ModelNotFound(InferError):
    status = 404


class PayloadTooLarge(InferError):
    status = 413


class UnsupportedMediaType(InferError):
    status = 415


class ModelNotReady(InferError):
    """503 is the retryable answer: probes and clients back off and come again."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelRefused(Exception):
    """The artifact must not or cannot be loaded (outside the root, sha256 mismatch, untrusted
    types, unreadable). The server stays up and not ready, and says why."""
