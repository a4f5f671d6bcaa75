"""``GET /openapi.json``: the OpenAPI 3.1 description of this API (public).

The document is the ``openapi.json`` file packaged next to this module (``docs/openapi.json`` is a
copy kept identical by a test). It is read once, at import, so serving it never touches the disk.
A unit test checks that it describes exactly the routes of the app, method for method.
"""

from __future__ import annotations

from importlib.resources import files

from quart import Blueprint, Response

docs_blueprint = Blueprint("docs", __name__)

#: The packaged document, as served.
OPENAPI_DOCUMENT = files("sesender.http").joinpath("openapi.json").read_bytes()


@docs_blueprint.get("/openapi.json")
async def openapi() -> Response:
    return Response(OPENAPI_DOCUMENT, status=200, content_type="application/json")
