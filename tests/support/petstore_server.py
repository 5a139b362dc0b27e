"""A small local server for the Swagger Petstore spec (tests/data/openapi/petstore): the
few operations the end-to-end catalog test calls, checking the API key like the real one.

    python -m tests.support.petstore_server PORT KEY_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aiohttp import web

PETS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "doggie", "status": "available", "photoUrls": []},
    2: {"id": 2, "name": "kitty", "status": "sold", "photoUrls": []},
}


def app(key: str) -> web.Application:
    @web.middleware
    async def api_key(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("api_key") != key:
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def by_status(request: web.Request) -> web.Response:
        status = request.query.get("status", "available")
        return web.json_response([p for p in PETS.values() if p["status"] == status])

    async def get_pet(request: web.Request) -> web.Response:
        pet = PETS.get(int(request.match_info["petId"]))
        return web.json_response(pet) if pet else web.json_response({}, status=404)

    async def add_pet(request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body.get("name"), str) or not isinstance(body.get("photoUrls"), list):
            return web.json_response({"error": "invalid"}, status=400)
        PETS[int(body["id"])] = body
        return web.json_response(body)

    a = web.Application(middlewares=[api_key])
    a.router.add_get("/v3/pet/findByStatus", by_status)
    a.router.add_get("/v3/pet/{petId}", get_pet)
    a.router.add_post("/v3/pet", add_pet)
    return a


if __name__ == "__main__":
    port, key_file = int(sys.argv[1]), Path(sys.argv[2])
    web.run_app(app(key_file.read_text().strip()), host="127.0.0.1", port=port, print=None)
