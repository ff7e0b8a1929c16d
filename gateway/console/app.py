"""The console's routes, each through `web.page` (session, CSRF, errors as pages, security headers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.routing import Route

from gateway.console import login, overview, requests, routing, teams
from gateway.console.sessions import Sessions
from gateway.console.static import StaticFiles, load_assets
from gateway.console.web import Console, Page, View, error_page, page, templates
from gateway.state import Gateway

# The API's `POST /v1/route/explain` handler: (gateway, request, principal) -> response. Given by the app, which
# owns the front doors whose parsers it uses (this package sits below gateway.http).
Explain = Callable[..., Awaitable[Response]]


async def not_found(view: View) -> Response:
    return error_page(view, 404, "Not found", f"The console has no page at {view.request.url.path}.")


def routes(gateway: Gateway, explain: Explain) -> list[Route]:
    master = gateway.settings.master_key
    sessions = Sessions(master.get_secret_value()) if master is not None else None
    assets = StaticFiles(load_assets())
    env = templates()
    env.globals["static"] = assets.url
    console = Console(gateway, sessions, env, explain)

    def route(path: str, handler: Page, method: str = "GET", public: bool = False) -> Route:
        return Route(path, page(console, handler, public=public), methods=[method])

    return [
        route("/ui/login", login.login_form, public=True),
        route("/ui/login", login.login, "POST", public=True),
        route("/ui/logout", login.logout, "POST"),
        route("/ui", overview.overview),
        route("/ui/teams", teams.teams_page),
        route("/ui/teams", teams.create_team, "POST"),
        # `path`: a team row written before names were checked may hold a '/'; the longer paths come first.
        route("/ui/teams/{name:path}/delete", teams.delete_team, "POST"),
        route("/ui/teams/{name:path}/keys", teams.create_key, "POST"),
        route("/ui/teams/{name:path}", teams.team_page),
        route("/ui/teams/{name:path}", teams.update_team, "POST"),
        route("/ui/keys/{key_id}/revoke", teams.revoke_key, "POST"),
        route("/ui/requests", requests.requests_page),
        route("/ui/requests/{request_id}", requests.request_page),
        route("/ui/routing", routing.routing_page),
        route("/ui/routing/explain", routing.explain_page, "POST"),
        route("/ui/routing/replay", routing.replay_page, "POST"),
        route("/ui/routing/replay/download", routing.replay_download, "POST"),
        Route("/ui/static/{name}", assets.serve, methods=["GET"]),
        route("/ui/{rest:path}", not_found),
    ]
