"""The mock fleet's control endpoint: read and change fault injection while the mocks run.

curl http://127.0.0.1:7900/faults
curl -X PUT http://127.0.0.1:7900/faults/bank-qianhai -d '{"latency_ms": 300}'
curl -X PUT http://127.0.0.1:7900/faults/credit-registry -d '{"down": true}'
"""

from __future__ import annotations

import json

from aiohttp import web

from credgate.adapters.mocks.faults import FaultSettingsError
from credgate.adapters.mocks.fleet import MockFleet


def control_app(fleet: MockFleet) -> web.Application:
    async def list_faults(_: web.Request) -> web.Response:
        return web.json_response(
            {sid: mock.faults.settings.as_dict() for sid, mock in fleet.mocks.items()}
        )

    async def put_faults(request: web.Request) -> web.Response:
        source_id = request.match_info["source_id"]
        if source_id not in fleet.mocks:
            return web.json_response({"error": f"unknown source {source_id!r}"}, status=404)
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise FaultSettingsError("body must be a JSON object")
            settings = await fleet.set_faults(source_id, changes)
        except (ValueError, FaultSettingsError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(settings.as_dict())

    app = web.Application()
    app.add_routes([web.get("/faults", list_faults), web.put("/faults/{source_id}", put_faults)])
    return app
