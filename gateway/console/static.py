"""The console's stylesheet and script, served from the package (`gateway/console/static/`, shipped in the wheel):
no CDN, nothing fetched at run time. Read once when the routes are built; each URL carries a digest of its file
(`?v=`), so a browser may keep a file for a day and still sees a new release at once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

from gateway.console.web import SECURITY_HEADERS

MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    digest: str


def load_assets() -> dict[str, Asset]:
    """Every .css and .js file of the package's static directory, by file name."""
    assets: dict[str, Asset] = {}
    for entry in files("gateway.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], hashlib.sha256(body).hexdigest()[:12])
    return assets


class StaticFiles:
    """`GET /ui/static/{name}`: one of the loaded assets, or 404 (no path is ever read from the request)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    def url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.assets[name].digest}"

    async def serve(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["name"])
        if asset is None:
            return Response(b"not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400", "ETag": f'"{asset.digest}"'}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
