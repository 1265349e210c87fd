"""The baseline: a bare aiohttp server whose handler reads the body and answers 200.

Reading the body keeps the comparison fair (the bytes cross the socket either way, and an
unread body makes aiohttp close the connection); nothing else is done.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status": "received"}', content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/callbacks/suno/midi", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
