"""The signup's two hot requests, served past Litestar's router.

``POST /registrations`` and ``GET /registrations/{id}`` are nearly every request a peak
brings, and Litestar routes each one afresh: it normalises the path, checks the Host, finds
the route (a status poll's id misses the router's cache every time), merges the exception
handlers of the route's layers and copies the scope: ~5 us a request in-process, of the
API's ~130 (``docs/performance.md``). ``SignupApp`` recognises those two forms itself and
calls the very ASGI app Litestar's router would have called (the /registrations mount inside
the middleware Litestar built for it), inside the same exception handling, with the scope as
the router would have left it. Anything else goes through Litestar: another path or method,
a path Litestar would first normalise (a trailing or doubled slash), a root path, an invalid
Host (Litestar answers 400), or an app with hooks this shortcut would skip (before-send
hooks, CORS, OpenTelemetry). ``tests/unit/test_hot_routes.py`` holds the two ways to the same
answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar._asgi.utils import is_valid_host, wrap_in_exception_handler
from litestar.enums import ScopeType
from litestar.middleware._internal.exceptions.middleware import ExceptionHandlerMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from interfaces.http.registrations import PATH

_PREFIX = PATH + "/"


@dataclass(frozen=True, slots=True)
class _Route:
    """What Litestar's router finds for a request to the mount, found once."""

    app: ASGIApp  # the mount's middleware stack, inside the exception handling
    handler: Any
    exception_handlers: Any
    template: str


class SignupApp(Litestar):
    """Litestar, with ``POST /registrations`` and ``GET /registrations/{id}`` routed here."""

    # Looked up at the first request (every route is registered by then): None when
    # Litestar is to route everything.
    _hot_route: _Route | None
    _looked_up = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        rest = _mount_rest(scope) if scope["type"] == ScopeType.HTTP else None
        if rest is not None:
            if not self._looked_up:
                self._hot_route, self._looked_up = self._find_hot_route(), True
            route = self._hot_route
            if route is not None:
                # The scope as Litestar.__call__ and its router leave it for the mount.
                scope["app"] = scope["litestar_app"] = self
                scope.setdefault("state", {})
                scope["path_params"] = {}
                scope["path"] = rest
                ScopeState.from_scope(scope).exception_handlers = route.exception_handlers
                scope["route_handler"] = route.handler
                scope["path_template"] = route.template
                await route.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _find_hot_route(self) -> _Route | None:
        """The mount's route, if Litestar would call it straight from its router for both
        forms; None (Litestar routes everything) when a layer in between would be skipped."""
        plain = (
            not self.before_send
            and isinstance(self.asgi_handler, ExceptionHandlerMiddleware)
            and self.asgi_handler.app is self.asgi_router
        )
        if not plain:
            return None
        try:
            found = self.asgi_router.handle_routing(path=PATH, method="POST")
            polled = self.asgi_router.handle_routing(path=_PREFIX + "id", method="GET")
        except Exception:  # routed otherwise than this module knows: leave it to Litestar
            return None
        app, handler, rest, _, template = found
        if rest != "/" or polled[0] is not app or polled[1] is not handler or polled[2] != "/id/":
            return None
        return _Route(
            wrap_in_exception_handler(app=app),
            handler,
            handler.resolve_exception_handlers(),
            template,
        )


def _mount_rest(scope: Scope) -> str | None:
    """The path the /registrations mount would be given for this request, when it is one of
    the two hot forms exactly as Litestar's router would route it; else None."""
    if scope.get("root_path"):
        return None
    path, method = scope["path"], scope["method"]  # type: ignore[typeddict-item]
    if method == "POST" and path == PATH:
        rest = "/"
    elif method == "GET" and path.startswith(_PREFIX):
        registration_id = path[len(_PREFIX) :]
        if not registration_id or "/" in registration_id:
            return None
        rest = f"/{registration_id}/"
    else:
        return None
    for name, value in scope["headers"]:
        if name == b"host":
            return rest if is_valid_host(value) else None
    return rest
