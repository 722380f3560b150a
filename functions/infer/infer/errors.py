"""Errors as types: each one carries the HTTP status it maps to, rendered in one place
(`DataPlane._dispatch`, in the body shape of the protocol that owns the path).

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


class NotFound(InferError):
    status = 404


class ModelNotFound(NotFound):
    pass


class MethodNotAllowed(InferError):
    """RFC 9110 asks a 405 to list the methods the resource does allow (the Allow header)."""

    status = 405

    def __init__(self, message: str, allow: tuple[str, ...]):
        super().__init__(message)
        self.allow = allow


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


class ModelUnavailable(ModelNotReady):
    """A pooled model whose load was refused (sha256, budget, unreadable): 503 to its clients,
    as one refused model is; the repository API's load answers it as a failed load (400)."""


def headers_of(exc: InferError) -> list[tuple[str, str]]:
    """The headers an error's status needs, so that whoever renders it cannot forget them."""
    if isinstance(exc, ModelNotReady):
        return [("Retry-After", str(exc.retry_after_s))]
    if isinstance(exc, MethodNotAllowed):
        return [("Allow", ", ".join(exc.allow))]
    return []


class ModelRefused(Exception):
    """The artifact must not or cannot be loaded (outside the root, sha256 mismatch, untrusted
    types, unreadable). The server stays up and not ready, and says why."""
