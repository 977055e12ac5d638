"""The Litestar application. Built by ``create_app``; connects only when it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from application.services import Services, keep_services, services_of
from infrastructure.composition.api import running_services
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from interfaces.http import health, page, registrations, status, verification
from interfaces.http.hot_routes import SignupApp
from interfaces.http.metrics import MetricsController
from interfaces.http.observability import observe
from interfaces.http.openapi import document_operations
from interfaces.http.problems import exception_handlers, problem_details_plugin


def create_app(
    open_services: Callable[[], AbstractAsyncContextManager[Services | None]],
    terms_file: str | None = None,
) -> Litestar:
    """``open_services`` is entered when the app starts and left when it stops (it gives
    None when the process was told to stop before they were ready: nothing is served then);
    ``terms_file``: the operator's terms of use (the shipped model text when unset)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services() as services:
            keep_services(app.state, services)
            try:
                yield
            finally:
                keep_services(app.state, None)

    def services(state: State) -> Services:
        return services_of(state)

    app = SignupApp(
        route_handlers=[
            registrations.registrations,
            health.live,
            health.ready,
            page.signup_page,
            page.terms_page(terms_file),
            page.static_assets(),
            MetricsController,
        ],
        dependencies={
            "services": Provide(services, sync_to_thread=False),
        },
        lifespan=[lifespan],
        plugins=[problem_details_plugin()],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        middleware=[observe],
        openapi_config=_openapi_config(),
        # Logging is the process's own (infrastructure/logging.py): Litestar's default config
        # would replace the root handler with its queue of text lines. Unhandled errors are
        # logged by the problem handler, as `unhandled_error`.
        logging_config=None,
        debug=False,
    )
    document_operations(
        app,
        [
            registrations.documented,
            status.documented,
            verification.documented_verify,
            verification.documented_resend,
        ],
        _openapi_config(),
    )
    return app


def build_app(settings: Settings) -> Litestar:
    """The app on the composition root's services, which start and stop with it."""
    return create_app(lambda: running_services(settings), settings.terms_file)


def build_app_from_env() -> Litestar:
    """For ASGI servers that import a factory (``uvicorn --factory``), one per worker process."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    return build_app(settings)


def _openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="signup",
        version="1.0.0",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
    )
