"""`elmo serve`: ELMo vectors over HTTP for the other programs of an edge box.

One process loads and warms up the model once; concurrent requests are
batched together by token budget whenever the model is free
(:mod:`.batcher`), refused early when the service is full (429) or a request
is too big (413), and drained on SIGTERM/SIGINT. Needs the ``serve`` extra
(Starlette, uvicorn, prometheus_client, orjson); the core runtime does not.

>>> from elmo_runtime.serve import ServeConfig, Service, create_app
>>> from elmo_runtime.settings import EmbedderSettings
>>> app = create_app(Service(ServeConfig(EmbedderSettings(mix="top"))))  # any ASGI server
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServeConfig", "Service", "create_app"]

if TYPE_CHECKING:
    from .app import create_app
    from .service import ServeConfig, Service


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("ServeConfig", "Service"):
        from . import service

        return getattr(service, name)
    raise AttributeError(name)
