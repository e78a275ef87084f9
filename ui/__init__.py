"""The operators' dashboard at ``/ui``, served by the process that runs checkout."""

from ui.routes import COOKIE, STATIC, Dashboard, static_router, swagger_plugin, ui_routes

__all__ = ["COOKIE", "STATIC", "Dashboard", "static_router", "swagger_plugin", "ui_routes"]
