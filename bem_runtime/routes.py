"""URL table (kept apart from the handlers, as in the aiohttp examples)."""
from __future__ import annotations

from aiohttp import web

from bem_runtime import admin, handlers


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/generate", handlers.generate)
    app.router.add_post("/api/generate", handlers.generate)  # the seed's path, kept for clients
    app.router.add_post("/v1/route", handlers.route)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get(admin.ADMIN_PREFIX, admin.list_checkpoints)
    app.router.add_put(admin.ADMIN_PREFIX + "/{name}", admin.put_checkpoint)
    app.router.add_delete(admin.ADMIN_PREFIX + "/{name}", admin.delete_checkpoint)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/metrics", handlers.metrics)
