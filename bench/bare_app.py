"""The baseline for bench/ingest.py: a bare Starlette app that only reads the body.

Served exactly as ``loops-bridge serve`` serves the bridge (bridge/cli.py ``_serve``): one
uvicorn process, access log off, no log config, uvloop/httptools picked automatically.

    python bench/bare_app.py --port 8100
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def receive_webhook(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/webhooks/{endpoint_id}", receive_webhook, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
