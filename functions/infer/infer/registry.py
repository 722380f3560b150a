"""The seam between the protocols and the models: a `Registry` serves models by name.

Two implementations: `infer.model.ModelRegistry` holds the one model of a one-model server
(MODEL_PATH), `infer.pool.ModelPool` a repository of many, loaded on demand (MODEL_REPOSITORY).
The data plane and every protocol see only this interface, so a protocol serves a pooled model
exactly as it serves the one model, and never asks which registry it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

if TYPE_CHECKING:
    from .model import ServedModel


class Registry(Protocol):
    @property
    def extensions(self) -> tuple[str, ...]:
        """KServe V2 server extensions this registry adds (the pool: model_repository)."""
        ...

    @property
    def loads_on_demand(self) -> bool:
        """True when `get` may load a model, and so wait (the pool)."""
        ...

    @property
    def names(self) -> list[str]:
        """Every model it can serve, loaded or not."""
        ...

    def __iter__(self) -> Iterator[ServedModel]:
        """The models loaded now."""
        ...

    def require_ready(self) -> None:
        """Raise the 503 that says why when it cannot serve yet."""
        ...

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model, to serve a request: the pool loads it first when it is not loaded."""
        ...

    def peek(self, name: str, version: str | None = None) -> ServedModel:
        """The model when loaded, else the error that says why: readiness, never a load."""
        ...

    def choose(self, request: Any) -> ServedModel:
        """The model of a request whose protocol names none (MLflow's /invocations)."""
        ...

    def route_name(self, request: Any) -> str | None:
        """The model a request names outside its path (host, X-Model-Name), or None."""
        ...

    def boundary(self, headers: Mapping[str, str]) -> str | None:
        """The one model a request may reach when it came on that model's own host."""
        ...

    def may_block(self, name: str | None) -> bool:
        """Whether serving `name` may wait for a load (the adapter then leaves the event loop)."""
        ...

    def label(self, name: str | None) -> str:
        """The metrics label of a request's model, from a bounded set (a stray name cannot grow it)."""
        ...

    def index(self, ready_only: bool = False) -> list[dict]:
        """The model repository extension's index (a 404 where there is no repository)."""
        ...

    def load(self, name: str) -> ServedModel:
        """The repository extension's load (a 404 where there is no repository)."""
        ...

    def unload(self, name: str) -> bool:
        """The repository extension's unload: True when a load in flight unloads when it ends."""
        ...
