"""Liveness and readiness."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.responses import json_bytes
from gateway.state import Gateway


def routes(gateway: Gateway) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return json_bytes(b'{"status":"ok"}')

    async def readyz(request: Request) -> Response:
        catalog = gateway.catalog
        providers = {
            name: {
                "kind": p.kind,
                "region": p.region,
                "configured": p.api_key is not None or p.kind == "litellm",
                "demo": p.demo,
            }
            for name, p in catalog.providers.items()
        }
        storage = await gateway.store.ping() if gateway.started else False
        if gateway.started:
            # Asked, not remembered: a node that fail_closed took out of the load balancer must see the store come
            # back without a request to find out, and an idle node must see it go (bounded by the Redis timeout).
            await gateway.limit_store.ping()
        limits = gateway.limits_status()
        # Refusing every request (fail_closed with the limit store unreachable) is not ready; fail_open is.
        limits_ok = limits["reachable"] or limits["on_failure"] != "fail_closed"
        ready = gateway.started and storage and limits_ok and not gateway.draining
        body = {
            "status": "ready" if ready else "draining" if gateway.draining else "starting",
            "mode": "demo" if catalog.demo else "live",
            "demo": catalog.demo,
            "config": catalog.source,
            "models": list(catalog.models),
            "providers": providers,
            "auth": "open" if gateway.auth.open else "master_key",
            "storage": {"kind": gateway.store.url_scheme, "reachable": storage},
            "catalog": gateway.catalog_status(),
            "policies": gateway.policy_status(),
            "limits": limits,
            "provider_queues": gateway.provider_queues.status(),
            "key_cache": gateway.auth.status(),
        }
        if catalog.demo:
            body["notice"] = "demo mode: answers come from the built-in provider emulators, not the real APIs"
        return json_bytes(orjson.dumps(body), status=200 if ready else 503)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
