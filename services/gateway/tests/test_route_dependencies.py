"""Every route's dependencies and endpoint run on the event loop: FastAPI runs a plain `def` in
its thread pool, a thread hop per request (the shared context dependency alone was a tenth of a
persona GET's CPU), and a dependency that binds the caller (`act_as`) must run in the request's
own task."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

import edrs_gateway.api.routes as routes
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute


def _is_async(call: Any) -> bool:
    # A function, or an instance whose class defines `async def __call__` (HTTPBearer, say).
    return inspect.iscoroutinefunction(call) or (
        not inspect.isfunction(call) and inspect.iscoroutinefunction(type(call).__call__)
    )


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _routes() -> Iterator[APIRoute]:
    for module in pkgutil.iter_modules(routes.__path__):
        router = getattr(
            importlib.import_module(f"{routes.__name__}.{module.name}"), "router", None
        )
        if router is not None:
            yield from (r for r in router.routes if isinstance(r, APIRoute))


def test_no_route_runs_a_dependency_or_endpoint_in_the_thread_pool() -> None:
    found = list(_routes())
    assert len(found) > 50, "the walk must see the API's routes"
    offenders = sorted(
        {
            f"{getattr(call, '__module__', '?')}.{getattr(call, '__qualname__', repr(call))} "
            f"(route {route.path})"
            for route in found
            for call in [route.endpoint, *_calls(route.dependant)]
            if not _is_async(call)
        }
    )
    assert offenders == [], "make these `async def`: " + "; ".join(offenders)
