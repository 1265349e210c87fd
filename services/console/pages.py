"""The console's web UI: two pages and their assets, all from ``static/`` in this package
(no CDN, no external font or script), and the headers that hold every answer to that.

The pages read the API from the browser; the server only hands out files. The
Content-Security-Policy allows this origin's scripts, styles, images (and ``data:``
images), and ``blob:`` media for playback in the browser, nothing inline, no frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.http import http_error

__all__ = ["SECURITY_HEADERS", "STATIC_DIR", "security_headers", "setup_pages"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: every answer, a page, a file, JSON or an error, carries
    :data:`SECURITY_HEADERS` (a redirect raised as an exception too)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


def setup_pages(app: web.Application) -> None:
    """``/`` the task list, ``/tasks/{id}`` one task (the page reads the id from its URL),
    ``/static/<file>`` their assets."""
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/tasks/{id}", _page("task.html"))
    app.router.add_get("/static/{path:.+}", _asset)


def _page(name: str) -> Handler:
    path = STATIC_DIR / name

    async def page(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers=_REVALIDATE)

    return page


#: Served files are revalidated (ETag, Last-Modified) on each use: a new release's pages
#: never run with the last release's scripts.
_REVALIDATE: Final = {"Cache-Control": "no-cache"}


async def _asset(request: web.Request) -> web.StreamResponse:
    """A file below :data:`STATIC_DIR` (never outside it, symlinks included); a JSON 404
    otherwise (aiohttp's own static route answers an empty one)."""
    name = request.match_info["path"]
    try:
        path = (STATIC_DIR / name).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        found = False
    if not found:
        return http_error(404, "not_found", f"no such file: /static/{name}")
    return web.FileResponse(path, headers=_REVALIDATE)
