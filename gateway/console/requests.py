"""`/ui/requests`: the ledger as a table, filtered by any of its columns, searched, ordered, a page at a time; and
one request's page (`/ui/requests/{id}`) with its route reason, the inputs its routing decision read, and its
content only where GATEWAY_LEDGER_CONTENT is on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.responses import Response

from gateway.console.moments import moment
from gateway.console.web import View
from gateway.errors import GatewayError
from gateway.store.base import LEDGER_ORDERS, LedgerFilter, LedgerRow

PAGE_SIZE = 50
MAX_PAGE = 10_000  # an offset beyond 500,000 rows: narrow the filters instead
# The filter fields of the form, in its order: (query parameter, label).
FILTER_FIELDS = (
    ("team", "Team"),
    ("key", "Key (prefix or id)"),
    ("model", "Model"),
    ("provider", "Provider"),
    ("region", "Region"),
    ("route_reason", "Route reason"),
    ("status", "Status"),
    ("endpoint", "Endpoint"),
    ("since", "Since"),
    ("until", "Until"),
    ("q", "Search"),
)
KNOWN = {name for name, _ in FILTER_FIELDS} | {"order", "page", "errors", "lines"}
ERRORS = {"": None, "errors": True, "ok": False}
LINES = {"": None, "batch": True, "interactive": False}  # batches' lines, or the other requests


@dataclass(frozen=True, slots=True)
class Query:
    """The table's query string, read and checked."""

    values: dict[str, str]  # as typed (shown in the form again)
    filters: LedgerFilter
    order: str
    page: int

    def link(self, **changes: Any) -> str:
        """This query with some parameters changed (None: removed), as a link to the table."""
        merged = {**self.values, "order": self.order, "page": str(self.page), **changes}
        kept = {k: str(v) for k, v in merged.items() if v not in (None, "") and not (k == "page" and str(v) == "1")}
        if kept.get("order") == "newest":
            kept.pop("order")
        return "/ui/requests" + (f"?{urlencode(kept)}" if kept else "")


def _bad(field: str, message: str) -> GatewayError:
    return GatewayError(400, f"Invalid '{field}': {message}.", "invalid_request_error", "invalid_value", field)


def read_query(params: dict[str, str], now: float) -> Query:
    values = {name: params.get(name, "").strip() for name, _ in FILTER_FIELDS}
    values["errors"] = params.get("errors", "").strip()
    values["lines"] = params.get("lines", "").strip()
    order = params.get("order", "").strip() or "newest"
    if order not in LEDGER_ORDERS:
        raise _bad("order", f"use one of {', '.join(LEDGER_ORDERS)}")
    page_text = params.get("page", "").strip() or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
        raise _bad("page", f"a page number from 1 to {MAX_PAGE}")
    status = values["status"]
    if status and not (status.isdigit() and 100 <= int(status) <= 599):
        raise _bad("status", "an HTTP status such as 200 or 429")
    if values["errors"] not in ERRORS:
        raise _bad("errors", "errors, ok or empty")
    if values["lines"] not in LINES:
        raise _bad("lines", "batch, interactive or empty")
    filters = LedgerFilter(
        team=values["team"] or None,
        key=values["key"] or None,
        model=values["model"] or None,
        provider=values["provider"] or None,
        region=values["region"] or None,
        route_reason=values["route_reason"] or None,
        status=int(status) if status else None,
        errors=ERRORS[values["errors"]],
        endpoint=values["endpoint"] or None,
        in_batch=LINES[values["lines"]],
        since=moment(values["since"], now, "since"),
        until=moment(values["until"], now, "until"),
        search=values["q"] or None,
    )
    return Query(values, filters, order, int(page_text))


async def requests_page(view: View) -> Response:
    gateway = view.gateway
    params = dict(view.request.query_params)
    unknown = sorted(set(params) - KNOWN)
    try:
        if unknown:
            raise _bad(unknown[0], "not a filter of this table")
        query = read_query(params, time.time())
    except GatewayError as error:
        if error.status >= 500:
            raise
        values = {name: params.get(name, "") for name, _ in FILTER_FIELDS}
        values |= {"errors": params.get("errors", ""), "lines": params.get("lines", "")}
        return _render(view, 400, Query(values, LedgerFilter(), "newest", 1), [], 0, error.message)
    page = await gateway.store.ledger_page(
        query.filters, query.order, offset=(query.page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    return _render(view, 200, query, page.rows, page.total or 0, "")


def _render(view: View, status: int, query: Query, rows: list[LedgerRow], total: int, error: str) -> Response:
    pages = max(1, -(-total // PAGE_SIZE))
    catalog = view.gateway.catalog
    return view.render(
        "requests.html",
        status=status,
        title="Requests",
        section="requests",
        query=query,
        fields=FILTER_FIELDS,
        rows=rows,
        total=total,
        pages=pages,
        first=(query.page - 1) * PAGE_SIZE + 1 if rows else 0,
        last=(query.page - 1) * PAGE_SIZE + len(rows),
        previous=query.link(page=query.page - 1) if query.page > 1 else "",
        next=query.link(page=query.page + 1) if query.page < pages else "",
        orders=LEDGER_ORDERS,
        error=error,
        known_models=list(catalog.models),
        known_providers=list(catalog.providers),
        known_regions=list(catalog.regions),
    )


def decision_inputs(row: LedgerRow) -> dict[str, Any] | None:
    """The inputs the routing decision read (recorded since migration 6), or None."""
    if row.decision is None:
        return None
    try:
        value = orjson.loads(row.decision)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def content_text(content: str) -> str:
    """The stored content, indented for reading (as stored when it is not JSON)."""
    try:
        return orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return content


async def request_page(view: View) -> Response:
    gateway = view.gateway
    request_id = view.request.path_params["request_id"]
    row = await gateway.store.ledger_row(request_id)
    if row is None:
        raise GatewayError(404, f"No request {request_id!r} in the ledger.", "invalid_request_error", "not_found")
    show_content = gateway.settings.ledger_content
    return view.render(
        "request.html",
        title=f"Request {row.id}",
        section="requests",
        row=row,
        inputs=decision_inputs(row),
        content_enabled=show_content,
        content=content_text(row.content) if show_content and row.content else None,
    )
