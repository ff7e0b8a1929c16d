"""The admin service (gateway/admin/service.py): teams, keys and spend reports, on a real SQLite store in tmp_path.

Both the admin API and the CLI call these functions, so their answers and their 400s (naming the field) are
pinned here once. Times are fixed (`NOW`), the time zone is UTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from gateway.admin import service
from gateway.admin.service import SHOWN_ONCE, parse_time
from gateway.auth.keys import hash_key
from gateway.catalog import Catalog, ModelConfig, Price, Provider, Timeouts
from gateway.errors import GatewayError
from gateway.limits.base import Limit, LimitsUnavailable, State
from gateway.limits.callers import caller_limits, model_limits, wants
from gateway.limits.memory import MemoryLimitStore
from gateway.store import open_store
from gateway.store.base import HoldRequest, LedgerRow, Rates, Scope, Settlement, Store, Team, key_scope, team_scope

T = TypeVar("T")
TZ = "UTC"
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
MARCH = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())  # the monthly period holding NOW
POLICIES = {"default", "eu-only"}


def catalog() -> Catalog:
    def provider(name: str, region: str) -> Provider:
        return Provider(
            name, "openai-compatible", region, f"https://{name}.example/v1", SecretStr("k"), None, 8, Timeouts()
        )

    def model(name: str, provider: str) -> ModelConfig:
        price = Price(input=Decimal("0.1"), output=Decimal("0.3"))
        return ModelConfig(
            name=name,
            provider=provider,
            upstream_model=name,
            context_window=32_000,
            max_output_tokens=4_096,
            price=price,
        )

    return Catalog(
        source="test",
        providers={"mistral": provider("mistral", "eu"), "moonshot": provider("moonshot", "cn")},
        models={"mistral-small": model("mistral-small", "mistral"), "kimi-k2": model("kimi-k2", "moonshot")},
        demo=False,
    )


def using(tmp_path: Path, body: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
        await store.open()
        try:
            return await asyncio.wait_for(body(store), 10)
        finally:
            await store.close()

    return asyncio.run(main())


def refused(body: Callable[[Store], Awaitable[Any]], tmp_path: Path) -> GatewayError:
    """The GatewayError `body` raises."""

    async def run(store: Store) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await body(store)
        return caught.value

    return using(tmp_path, run)


class Untouchable:
    """A store that must not be used: input refused before any database access."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name}) for input that should have been refused first")


def refused_before_the_store(body: Callable[[Any], Awaitable[Any]]) -> GatewayError:
    async def run() -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await body(Untouchable())
        return caught.value

    return asyncio.run(run())


def ledger_row(row_id: str, cost: int, ts: float, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "id": row_id,
        "ts": ts,
        "team": "eng",
        "key_id": None,
        "key_prefix": None,
        "requested_model": "auto",
        "model": "mistral-small",
        "provider": "mistral",
        "region": "eu",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "cost_nanos": cost,
        "estimated": False,
        "status": 200,
        "latency_ms": 5.0,
        "ttft_ms": None,
        "route_reason": "cheapest",
        "stream": False,
    }
    values.update(fields)
    return LedgerRow(**values)


# -- teams -------------------------------------------------------------------------------------------


def test_create_team_returns_its_status_with_exact_money(tmp_path: Path) -> None:
    body = {
        "name": "eng",
        "budget_usd": "12.345678901",  # a string is read exactly, to the nano-dollar
        "period": "monthly",
        "soft_limit_pct": 80,
        "regions": ["eu", " eu "],  # names are stripped and deduplicated
        "models": ["mistral-small"],
        "policy": "eu-only",
    }

    async def main(store: Store) -> tuple[dict[str, Any], Any]:
        view = await service.create_team(store, body, TZ, catalog(), NOW, POLICIES)
        return view, await store.get_team("eng")

    view, stored = using(tmp_path, main)
    assert view == {
        "name": "eng",
        "budget_usd": 12.345678901,
        "budget_nanos": 12_345_678_901,
        "period": "monthly",
        "soft_limit_pct": 80,
        "regions": ["eu"],
        "models": ["mistral-small"],
        "policy": "eu-only",
        "rpm": None,
        "tpm": None,
        "max_concurrent": None,
        "model_limits": {},
        "created_at": "2024-03-15T12:00:00Z",
        "period_start": "2024-03-01T00:00:00Z",
        "period_resets_at": "2024-04-01T00:00:00Z",
        "spent_usd": 0.0,
        "spent_nanos": 0,
        "reserved_usd": 0.0,
        "reserved_nanos": 0,
        "remaining_usd": 12.345678901,
        "remaining_nanos": 12_345_678_901,
        "rate_usage": {"models": {}},  # no limits: nothing to peek at, so known even without a limit store
    }
    assert (stored.budget_nanos, stored.regions, stored.created_at) == (12_345_678_901, ["eu"], int(NOW.timestamp()))


def test_a_team_without_a_budget_has_no_remaining_and_a_total_period_never_resets(tmp_path: Path) -> None:
    view = using(tmp_path, lambda store: service.create_team(store, {"name": "ops", "period": "total"}, TZ, now=NOW))
    assert (view["budget_nanos"], view["remaining_nanos"], view["remaining_usd"]) == (None, None, None)
    assert (view["period_start"], view["period_resets_at"]) == ("1970-01-01T00:00:00Z", None)
    assert (view["policy"], view["regions"], view["models"]) == ("default", None, None)


def test_a_float_budget_is_read_through_its_decimal_text(tmp_path: Path) -> None:
    view = using(tmp_path, lambda store: service.create_team(store, {"name": "eng", "budget_usd": 0.1}, TZ, now=NOW))
    assert view["budget_nanos"] == 100_000_000  # not 100000000.00000000555 rounded somewhere


@pytest.mark.parametrize(
    ("body", "code", "param", "says"),
    [
        ({"name": "Eng"}, "invalid_value", "name", "1-63 characters of a-z, 0-9"),
        ({"name": "admin"}, "invalid_value", "name", "built-in team of the master key"),
        ({"budget_usd": 1}, "missing_field", "name", "'name' is required"),
        ({"name": "eng", "owner": "me"}, "unknown_field", "owner", "Unknown field 'owner'"),
        ({"name": "eng", "budget_usd": -1}, "invalid_value", "budget_usd", "must not be negative"),
        ({"name": "eng", "budget_usd": "9000000000.01"}, "invalid_value", "budget_usd", "at most 9000000000 USD"),
        ({"name": "eng", "budget_usd": True}, "invalid_value", "budget_usd", "must be a number of USD"),
        ({"name": "eng", "budget_usd": "ten"}, "invalid_value", "budget_usd", "is not a number"),
        ({"name": "eng", "budget_usd": "NaN"}, "invalid_value", "budget_usd", "finite"),
        ({"name": "eng", "period": "yearly"}, "invalid_value", "period", "unknown period 'yearly'"),
        ({"name": "eng", "soft_limit_pct": 0}, "invalid_value", "soft_limit_pct", "from 1 to 100"),
        ({"name": "eng", "soft_limit_pct": 101}, "invalid_value", "soft_limit_pct", "from 1 to 100"),
        ({"name": "eng", "soft_limit_pct": "80"}, "invalid_value", "soft_limit_pct", "valid integer"),
        ({"name": "eng", "regions": ["eu", " "]}, "invalid_value", "regions", "empty names"),
        ({"name": "eng", "regions": ["us"]}, "unknown_region", "regions", "unknown region 'us'"),
        ({"name": "eng", "models": ["gpt-4o"]}, "unknown_model", "models", "unknown model 'gpt-4o'"),
        ({"name": "eng", "policy": "eu_only"}, "unknown_policy", "policy", "unknown policy 'eu_only'"),
        ({"name": "eng", "policy": "EU only"}, "invalid_value", "policy", "Invalid 'policy'"),
    ],
)
def test_create_team_refuses_bad_input_naming_the_field(body: dict[str, Any], code: str, param: str, says: str) -> None:
    error = refused_before_the_store(lambda store: service.create_team(store, body, TZ, catalog(), NOW, POLICIES))
    assert (error.status, error.code, error.param) == (400, code, param)
    assert says in error.message


def test_catalog_and_policy_checks_are_skipped_without_them(tmp_path: Path) -> None:
    body = {"name": "eng", "regions": ["us"], "models": ["gpt-4o"], "policy": "custom"}
    view = using(tmp_path, lambda store: service.create_team(store, body, TZ, now=NOW))
    assert (view["regions"], view["models"], view["policy"]) == (["us"], ["gpt-4o"], "custom")


def test_a_duplicate_team_is_refused(tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        await service.create_team(store, {"name": "eng"}, TZ, now=NOW)
        await service.create_team(store, {"name": "eng", "budget_usd": 5}, TZ, now=NOW)

    error = refused(main, tmp_path)
    assert (error.status, error.code, error.param) == (400, "duplicate", "name")


def test_team_status_counts_spend_and_reservations_of_the_current_period_only(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        await service.create_team(store, {"name": "eng", "budget_usd": "1"}, TZ, now=NOW)
        await service.create_team(store, {"name": "abc"}, TZ, now=NOW)
        scope = Scope(team_scope("eng"), MARCH, 1_000_000_000)
        await store.record(Settlement(ledger_row("r1", 250_000_000, NOW.timestamp()), [scope]))
        await store.record(Settlement(ledger_row("r0", 999, NOW.timestamp()), [Scope(team_scope("eng"), 0, None)]))
        await store.hold(HoldRequest("h1", [scope], 100_000_000, 4_000_000_000))
        return await service.get_team(store, "eng", TZ, NOW), await service.list_teams(store, TZ, NOW)

    view, listed = using(tmp_path, main)
    assert (view["spent_nanos"], view["reserved_nanos"], view["remaining_nanos"]) == (
        250_000_000,
        100_000_000,
        650_000_000,
    )
    assert (view["spent_usd"], view["remaining_usd"]) == (0.25, 0.65)
    assert [t["name"] for t in listed] == ["abc", "eng"]
    assert listed[1] == view


def test_get_a_team_that_does_not_exist(tmp_path: Path) -> None:
    error = refused(lambda store: service.get_team(store, "nobody", TZ, NOW), tmp_path)
    assert (error.status, error.code) == (404, "team_not_found")


def test_update_team_changes_only_what_is_given(tmp_path: Path) -> None:
    start = {"name": "eng", "budget_usd": 10, "soft_limit_pct": 50, "regions": ["eu"], "models": ["kimi-k2"]}

    async def main(store: Store) -> list[dict[str, Any]]:
        await service.create_team(store, start, TZ, catalog(), NOW, POLICIES)
        views = [await service.update_team(store, "eng", {"period": "daily"}, TZ, catalog(), NOW, POLICIES)]
        change = {"budget_usd": None, "regions": None, "models": ["mistral-small"], "policy": "eu-only"}
        views.append(await service.update_team(store, "eng", change, TZ, catalog(), NOW, POLICIES))
        views.append(await service.update_team(store, "eng", {}, TZ, catalog(), NOW, POLICIES))
        views.append(await service.get_team(store, "eng", TZ, NOW))
        return views

    daily, changed, unchanged, read_back = using(tmp_path, main)
    assert (daily["period"], daily["budget_nanos"], daily["soft_limit_pct"], daily["models"]) == (
        "daily",
        10_000_000_000,
        50,
        ["kimi-k2"],
    )
    assert (daily["period_start"], daily["period_resets_at"]) == ("2024-03-15T00:00:00Z", "2024-03-16T00:00:00Z")
    assert (changed["budget_nanos"], changed["regions"], changed["models"], changed["policy"]) == (
        None,
        None,
        ["mistral-small"],
        "eu-only",
    )
    assert (changed["period"], changed["soft_limit_pct"]) == ("daily", 50)  # not given: kept
    assert unchanged == changed == read_back


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"name": "other"}, 400, "invalid_value", "name"),  # no renaming
        ({"period": None}, 400, "invalid_value", "period"),  # an explicit null is not "absent"
        ({"policy": None}, 400, "invalid_value", "policy"),
        ({"policy": "nope"}, 400, "unknown_policy", "policy"),
        ({"models": ["gpt-4o"]}, 400, "unknown_model", "models"),
        ({"regions": ["mars"]}, 400, "unknown_region", "regions"),
        ({"budget": 5}, 400, "unknown_field", "budget"),
    ],
)
def test_update_team_refuses(body: dict[str, Any], status: int, code: str, param: str, tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        await service.create_team(store, {"name": "eng", "budget_usd": 3}, TZ, now=NOW)
        try:
            await service.update_team(store, "eng", body, TZ, catalog(), NOW, POLICIES)
        finally:  # nothing changed
            team = await store.get_team("eng")
            assert team is not None and (team.budget_nanos, team.period, team.policy) == (
                3_000_000_000,
                "monthly",
                "default",
            )

    error = refused(main, tmp_path)
    assert (error.status, error.code, error.param) == (status, code, param)


def test_update_a_team_that_does_not_exist(tmp_path: Path) -> None:
    error = refused(lambda store: service.update_team(store, "nobody", {"budget_usd": 1}, TZ, now=NOW), tmp_path)
    assert (error.status, error.code) == (404, "team_not_found")


def test_delete_team_counts_its_keys_and_then_it_is_gone(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        await service.create_team(store, {"name": "eng"}, TZ, now=NOW)
        await service.create_team(store, {"name": "ops"}, TZ, now=NOW)
        for team in ("eng", "eng", "ops"):
            await service.create_key(store, {"team": team}, now=NOW)
        deleted = await service.delete_team(store, "eng")
        with pytest.raises(GatewayError) as again:
            await service.delete_team(store, "eng")
        assert (again.value.status, again.value.code) == (404, "team_not_found")
        return deleted, await service.list_keys(store, TZ, now=NOW)

    deleted, keys = using(tmp_path, main)
    assert deleted == {"name": "eng", "deleted": True, "keys_deleted": 2}
    assert [k["team"] for k in keys] == ["ops"]


# -- keys --------------------------------------------------------------------------------------------


def test_create_key_shows_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    body = {"team": "eng", "name": "ci", "budget_usd": "2.5", "models": ["kimi-k2"], "expires_at": "2024-06-01"}

    async def main(store: Store) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        await service.create_team(store, {"name": "eng"}, TZ, now=NOW)
        made = await service.create_key(store, body, catalog(), NOW)
        found = await store.key_and_team(hash_key(made["key"]))
        return made, found, await service.get_key(store, made["id"], TZ, NOW)

    made, found, fetched = using(tmp_path, main)
    plaintext = made.pop("key")
    assert plaintext.startswith("gw-") and len(plaintext) > 40
    assert made["prefix"] == plaintext[:10]
    assert made["id"].startswith("key_")
    assert made["note"] == SHOWN_ONCE
    assert (made["team"], made["name"], made["budget_nanos"], made["budget_usd"], made["models"]) == (
        "eng",
        "ci",
        2_500_000_000,
        2.5,
        ["kimi-k2"],
    )
    assert (made["expires_at"], made["created_at"], made["revoked_at"], made["status"]) == (
        "2024-06-01T00:00:00Z",
        "2024-03-15T12:00:00Z",
        None,
        "active",
    )
    key, team = found
    assert (key.id, team.name) == (made["id"], "eng")
    assert key.key_hash == hash_key(plaintext) and plaintext not in repr(key)
    assert "key" not in fetched and "key_hash" not in fetched  # shown once: never again
    assert fetched == {**{k: v for k, v in made.items() if k != "note"}, "spent_usd": 0.0, "spent_nanos": 0}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"team": "nobody"}, "team_not_found", "team"),
        ({"team": ""}, "invalid_value", "team"),
        ({}, "missing_field", "team"),
        ({"team": "eng", "expires_at": "2024-03-15T11:59:59Z"}, "invalid_value", "expires_at"),  # in the past
        ({"team": "eng", "expires_at": 1_710_000_000_000}, "invalid_value", "expires_at"),  # milliseconds
        ({"team": "eng", "expires_at": "tomorrow"}, "invalid_value", "expires_at"),
        ({"team": "eng", "models": ["mistral-small"]}, "model_not_allowed", "models"),  # not among the team's
        ({"team": "eng", "models": ["gpt-4o"]}, "unknown_model", "models"),
        ({"team": "eng", "name": "x" * 201}, "invalid_value", "name"),
        ({"team": "eng", "secret": "x"}, "unknown_field", "secret"),
    ],
)
def test_create_key_refuses(body: dict[str, Any], code: str, param: str, tmp_path: Path) -> None:
    async def main(store: Store) -> None:
        await service.create_team(store, {"name": "eng", "models": ["kimi-k2"]}, TZ, now=NOW)
        try:
            await service.create_key(store, body, catalog(), NOW)
        finally:
            assert await store.list_keys() == []  # nothing was made

    error = refused(main, tmp_path)
    assert (error.status, error.code, error.param) == (400, code, param)


def test_list_keys_with_status_and_spend_in_the_teams_period(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await service.create_team(store, {"name": "eng", "period": "daily"}, TZ, now=NOW)
        await service.create_team(store, {"name": "ops"}, TZ, now=NOW)
        earlier = datetime(2024, 3, 1, tzinfo=UTC)
        await service.create_key(store, {"team": "eng", "expires_at": "2024-03-15T13:00:00Z"}, now=earlier)
        spender = await service.create_key(store, {"team": "eng", "name": "spender"}, now=NOW)
        gone = await service.create_key(store, {"team": "ops"}, now=datetime(2024, 3, 15, 12, 0, 1, tzinfo=UTC))
        await service.revoke_key(store, gone["id"], NOW)
        today = int(datetime(2024, 3, 15, tzinfo=UTC).timestamp())  # eng's period is a day
        for period, cost in ((today, 700), (today - 86_400, 5)):  # yesterday's does not count
            scope = Scope(key_scope(spender["id"]), period, None)
            await store.record(Settlement(ledger_row(f"r{period}", cost, NOW.timestamp()), [scope]))
        later = datetime(2024, 3, 15, 13, 0, tzinfo=UTC)  # the first key expires now
        return await service.list_keys(store, TZ, now=later), await service.list_keys(store, TZ, "eng", later)

    every, eng = using(tmp_path, main)
    assert [(k["team"], k["status"], k["spent_nanos"]) for k in every] == [
        ("eng", "expired", 0),
        ("eng", "active", 700),
        ("ops", "revoked", 0),
    ]
    assert eng == every[:2]


def test_list_keys_of_a_team_that_does_not_exist(tmp_path: Path) -> None:
    error = refused(lambda store: service.list_keys(store, TZ, "nobody", NOW), tmp_path)
    assert (error.status, error.code) == (404, "team_not_found")


def test_revoke_key_is_at_once_and_idempotent(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[dict[str, Any], dict[str, Any], Any]:
        await service.create_team(store, {"name": "eng"}, TZ, now=NOW)
        made = await service.create_key(store, {"team": "eng"}, now=NOW)
        first = await service.revoke_key(store, made["id"], NOW)
        second = await service.revoke_key(store, made["id"], datetime(2024, 4, 1, tzinfo=UTC))
        return first, second, await store.key_and_team(hash_key(made["key"]))

    first, second, found = using(tmp_path, main)
    assert (first["status"], first["revoked_at"]) == ("revoked", "2024-03-15T12:00:00Z")
    assert second["revoked_at"] == first["revoked_at"]  # the first revocation's time is kept
    assert found[0].revoked_at == int(NOW.timestamp())


@pytest.mark.parametrize("operation", ["get", "revoke"])
def test_a_key_that_does_not_exist(operation: str, tmp_path: Path) -> None:
    def call(store: Store) -> Awaitable[Any]:
        if operation == "get":
            return service.get_key(store, "key_missing", TZ, NOW)
        return service.revoke_key(store, "key_missing", NOW)

    error = refused(call, tmp_path)
    assert (error.status, error.code) == (404, "key_not_found")


# -- spend -------------------------------------------------------------------------------------------

DAY1 = datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2024, 3, 2, 10, tzinfo=UTC).timestamp()


async def with_ledger(store: Store) -> None:
    rows = [
        ledger_row("a", 1_250_000, DAY1, model="mistral-small"),
        ledger_row("b", 3, DAY1 + 1, model="kimi-k2", provider="moonshot", key_prefix="gw-aaaaaaa"),
        ledger_row("c", 2_000_000_001, DAY2, model="kimi-k2", provider="moonshot", team="ops", prompt_tokens=7),
    ]
    for row in rows:
        await store.record(Settlement(row, []))


def test_spend_report_grouped_with_its_total(tmp_path: Path) -> None:
    async def main(store: Store) -> dict[str, Any]:
        await with_ledger(store)
        return await service.spend_report(store, {"group_by": "model", "team": ""})  # an empty parameter: not given

    report = using(tmp_path, main)
    assert report["object"] == "spend_report" and report["group_by"] == "model"
    assert report["filters"] == {
        "team": None,
        "key": None,
        "model": None,
        "provider": None,
        "since": None,
        "until": None,
        "batch": None,
    }
    assert report["rows"] == [
        {
            "model": "kimi-k2",
            "requests": 2,
            "prompt_tokens": 107,
            "completion_tokens": 20,
            "cached_tokens": 0,
            "cost_usd": 2.000000004,
            "cost_nanos": 2_000_000_004,
        },
        {
            "model": "mistral-small",
            "requests": 1,
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "cached_tokens": 0,
            "cost_usd": 0.00125,
            "cost_nanos": 1_250_000,
        },
    ]
    assert report["total"]["cost_nanos"] == 2_001_250_004 and report["total"]["requests"] == 3
    assert "model" not in report["total"]


def test_spend_report_filters_and_csv(tmp_path: Path) -> None:
    async def main(store: Store) -> list[dict[str, Any]]:
        await with_ledger(store)
        return [
            await service.spend_report(store, {"since": "2024-03-01", "until": "2024-03-02", "group_by": "none"}),
            await service.spend_report(store, {"key": "gw-aaaaaaa", "group_by": "provider"}),
            await service.spend_report(store, service.parse_spend_query({"team": "ops", "group_by": "day"})),
        ]

    day_one, by_key, ops = using(tmp_path, main)
    assert (day_one["group_by"], day_one["rows"], day_one["total"]["cost_nanos"]) == (None, [], 1_250_003)
    assert (day_one["filters"]["since"], day_one["filters"]["until"]) == (
        "2024-03-01T00:00:00Z",
        "2024-03-02T00:00:00Z",
    )
    assert [(r["provider"], r["cost_nanos"]) for r in by_key["rows"]] == [("moonshot", 3)]
    assert [(r["day"], r["cost_nanos"]) for r in ops["rows"]] == [("2024-03-02", 2_000_000_001)]

    assert service.spend_csv(day_one) == (
        "requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n2,200,20,0,0.001250003\n"
    )
    assert service.spend_csv(ops) == (
        "day,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n2024-03-02,1,7,10,0,2.000000001\n"
    )


def test_spend_csv_writes_an_empty_cell_for_a_null_group(tmp_path: Path) -> None:
    async def main(store: Store) -> dict[str, Any]:
        await with_ledger(store)
        return await service.spend_report(store, {"group_by": "key"})

    report = using(tmp_path, main)
    assert service.spend_csv(report).splitlines()[1:] == [
        ",2,107,20,0,2.001250001",
        "gw-aaaaaaa,1,100,10,0,0.000000003",
    ]


def test_spend_report_groups_and_filters_by_batch(tmp_path: Path) -> None:
    async def main(store: Store) -> list[dict[str, Any]]:
        await with_ledger(store)
        for row in (
            ledger_row("batch-0", 40, DAY1 + 2, batch_id="batch_abc", custom_id="req-0"),
            ledger_row("batch-1", 2, DAY1 + 3, batch_id="batch_abc", custom_id="req-1"),
            ledger_row("other-0", 7, DAY1 + 4, batch_id="batch_xyz", custom_id="req-0", team="ops"),
        ):
            await store.record(Settlement(row, []))
        return [
            await service.spend_report(store, {"group_by": "batch"}),
            await service.spend_report(store, {"batch": "batch_abc", "group_by": "team"}),
        ]

    by_batch, one = using(tmp_path, main)
    assert {r["batch"]: (r["requests"], r["cost_nanos"]) for r in by_batch["rows"]} == {
        None: (3, 2_001_250_004),
        "batch_abc": (2, 42),
        "batch_xyz": (1, 7),
    }
    assert by_batch["total"]["cost_nanos"] == 2_001_250_053
    assert one["filters"]["batch"] == "batch_abc"
    assert [(r["team"], r["requests"], r["cost_nanos"]) for r in one["rows"]] == [("eng", 2, 42)]
    # The CSV names the grouping and leaves the requests of no batch an empty cell.
    assert sorted(service.spend_csv(by_batch).splitlines()[1:]) == [
        ",3,207,30,0,2.001250004",
        "batch_abc,2,200,20,0,0.000000042",
        "batch_xyz,1,100,10,0,0.000000007",
    ]
    assert service.spend_csv(by_batch).splitlines()[0].startswith("batch,requests,")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "region"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"since": "last week"}, "since"),
        ({"until": 1_710_000_000_000}, "until"),
        ({"teams": "eng"}, "teams"),
    ],
)
def test_a_bad_spend_query_names_its_parameter(params: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        service.parse_spend_query(params)
    assert (caught.value.status, caught.value.param) == (400, param)


# -- times -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_710_504_000, 1_710_504_000),
        (1_710_504_000.9, 1_710_504_000),
        ("1710504000", 1_710_504_000),
        ("2024-03-15", 1_710_460_800),  # a date is its midnight, UTC
        ("2024-03-15T12:00:00", 1_710_504_000),  # naive is UTC
        ("2024-03-15T13:00:00+01:00", 1_710_504_000),
        ("2024-03-15T12:00:00Z", 1_710_504_000),
        (0, 0),
    ],
)
def test_parse_time(value: Any, seconds: int) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", [True, None, [], "soon", -1, 253_402_300_800, 1_710_504_000_000])
def test_parse_time_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_time(value)


# -- rate limits -------------------------------------------------------------------------------------

LIMITED = {
    "name": "eng",
    "rpm": 60,
    "tpm": 100_000,
    "max_concurrent": 4,
    "model_limits": {"kimi-k2": {"rpm": 3, "max_concurrent": 2}, "mistral-small": {"tpm": 500_000}},
}


def test_rate_limits_of_a_team_are_stored_and_shown(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[dict[str, Any], Any]:
        view = await service.create_team(store, LIMITED, TZ, catalog(), NOW, POLICIES)
        return view, await store.get_team("eng")

    view, stored = using(tmp_path, main)
    assert (view["rpm"], view["tpm"], view["max_concurrent"]) == (60, 100_000, 4)
    assert view["model_limits"] == {  # by model name, every field shown (null: no limit)
        "kimi-k2": {"rpm": 3, "tpm": None, "max_concurrent": 2},
        "mistral-small": {"rpm": None, "tpm": 500_000, "max_concurrent": None},
    }
    assert stored.rates == Rates(60, 100_000, 4)
    assert stored.model_rates == {"kimi-k2": Rates(rpm=3, max_concurrent=2), "mistral-small": Rates(tpm=500_000)}
    # Without a limit store (the CLI on the database), the current use of set limits is not known here.
    assert view["rate_usage"] is None


def test_update_team_rate_limits_like_every_other_field(tmp_path: Path) -> None:
    async def main(store: Store) -> list[dict[str, Any]]:
        await service.create_team(store, LIMITED, TZ, catalog(), NOW, POLICIES)
        changes = [
            {"budget_usd": 5},  # rates not given: kept
            {"rpm": None, "max_concurrent": 8},  # null clears one, a number sets another, tpm is kept
            # model_limits is merged: kimi-k2's rpm cleared and tpm set (its max_concurrent kept), mistral-small's
            # removed, and a model not named keeps its limits.
            {"model_limits": {"kimi-k2": {"rpm": None, "tpm": 7_000}, "mistral-small": None}},
            {"model_limits": {}},  # an empty patch changes nothing
            {"model_limits": {"kimi-k2": {"tpm": None, "max_concurrent": None}}},  # left without a limit: dropped
        ]
        views = [await service.update_team(store, "eng", change, TZ, catalog(), NOW, POLICIES) for change in changes]
        await service.update_team(store, "eng", {"model_limits": {"kimi-k2": {"rpm": 1}}}, TZ, catalog(), NOW)
        views.append(await service.update_team(store, "eng", {"model_limits": None}, TZ, catalog(), NOW))  # all gone
        views.append(await service.get_team(store, "eng", TZ, NOW))
        return views

    kept, cleared, merged, unchanged, dropped, emptied, read_back = using(tmp_path, main)
    assert (kept["rpm"], kept["tpm"], kept["max_concurrent"], kept["budget_nanos"]) == (60, 100_000, 4, 5 * 10**9)
    assert kept["model_limits"] == service.team_view(team_of(LIMITED))["model_limits"]
    assert (cleared["rpm"], cleared["tpm"], cleared["max_concurrent"]) == (None, 100_000, 8)
    assert merged["model_limits"] == {"kimi-k2": {"rpm": None, "tpm": 7_000, "max_concurrent": 2}}
    assert unchanged == merged
    assert dropped["model_limits"] == {}
    assert emptied["model_limits"] == {} and emptied["rate_usage"] is None  # the team's own limits remain
    assert read_back == emptied


def team_of(body: dict[str, Any]) -> Team:
    """The team a create body describes (rate limits only)."""
    models = body.get("model_limits") or {}
    return Team(
        body["name"],
        rates=Rates(body.get("rpm"), body.get("tpm"), body.get("max_concurrent")),
        model_rates={m: Rates(e.get("rpm"), e.get("tpm"), e.get("max_concurrent")) for m, e in models.items()},
    )


BAD_RATES = [
    ({"rpm": 0}, "rpm", "from 1 to"),
    ({"tpm": -5}, "tpm", "from 1 to"),
    ({"max_concurrent": 1_000_000_000_001}, "max_concurrent", "from 1 to 1000000000000"),
    ({"rpm": True}, "rpm", "whole number"),
    ({"rpm": 60.0}, "rpm", "whole number"),
    ({"tpm": "1000"}, "tpm", "whole number"),
    ({"model_limits": ["kimi-k2"]}, "model_limits", "must be an object"),
    ({"model_limits": {"kimi-k2": 3}}, "model_limits", "'kimi-k2' must be an object of rpm, tpm and max_concurrent"),
    ({"model_limits": {"kimi-k2": {"rpn": 3}}}, "model_limits", "unknown field 'rpn' in 'kimi-k2'"),
    ({"model_limits": {"kimi-k2": {"rpm": 0}}}, "model_limits", "'kimi-k2': rpm must be a whole number from 1"),
    ({"model_limits": {"kimi-k2": {"tpm": 2.5}}}, "model_limits", "'kimi-k2': tpm must be a whole number"),
    ({"model_limits": {" ": {"rpm": 1}}}, "model_limits", "empty model name"),
]


@pytest.mark.parametrize(("fields", "param", "says"), BAD_RATES)
def test_bad_rate_limits_are_refused_naming_the_field(fields: dict[str, Any], param: str, says: str) -> None:
    for call in (
        lambda store: service.create_team(store, {"name": "eng", **fields}, TZ, catalog(), NOW, POLICIES),
        lambda store: service.update_team(store, "eng", fields, TZ, catalog(), NOW, POLICIES),
    ):
        error = refused_before_the_store(call)
        assert (error.status, error.code, error.param) == (400, "invalid_value", param)
        assert says in error.message and error.message.startswith(f"Invalid '{param}': ")
    if param != "model_limits":
        error = refused_before_the_store(lambda store: service.create_key(store, {"team": "eng", **fields}))
        assert (error.status, error.param) == (400, param) and says in error.message


def test_model_limits_on_a_model_outside_the_catalog_are_refused_naming_it(tmp_path: Path) -> None:
    body = {"name": "eng", "model_limits": {"kimi-k2": {"rpm": 3}, "gpt-4o": {"rpm": 3}}}
    error = refused_before_the_store(lambda store: service.create_team(store, body, TZ, catalog(), NOW))
    assert (error.status, error.code, error.param) == (400, "unknown_model", "model_limits")
    assert "unknown model 'gpt-4o'" in error.message and "mistral-small" in error.message

    async def main(store: Store) -> dict[str, Any]:
        await service.create_team(store, {"name": "eng", "model_limits": {"old-model": {"rpm": 1}}}, TZ, now=NOW)
        with pytest.raises(GatewayError) as caught:  # setting a limit on it again is refused...
            await service.update_team(store, "eng", {"model_limits": {"old-model": {"rpm": 2}}}, TZ, catalog(), NOW)
        assert caught.value.param == "model_limits" and "'old-model'" in caught.value.message
        # ... removing it is not (a model that left the catalog must not keep its limits stuck)
        return await service.update_team(store, "eng", {"model_limits": {"old-model": None}}, TZ, catalog(), NOW)

    assert using(tmp_path, main)["model_limits"] == {}


def test_a_key_has_its_own_rate_limits(tmp_path: Path) -> None:
    async def main(store: Store) -> tuple[dict[str, Any], dict[str, Any], Any, list[dict[str, Any]]]:
        await service.create_team(store, {"name": "eng", "rpm": 100}, TZ, now=NOW)
        made = await service.create_key(store, {"team": "eng", "rpm": 30, "max_concurrent": 2}, now=NOW)
        bare = await service.create_key(store, {"team": "eng"}, now=NOW)
        found = await store.key_and_team(hash_key(made["key"]))
        return made, bare, found, await service.list_keys(store, TZ, "eng", NOW)

    made, bare, found, listed = using(tmp_path, main)
    assert (made["rpm"], made["tpm"], made["max_concurrent"]) == (30, None, 2)
    assert (bare["rpm"], bare["tpm"], bare["max_concurrent"]) == (None, None, None)
    key, team = found  # the request path's one read has both the key's and the team's
    assert (key.rates, team.rates) == (Rates(rpm=30, max_concurrent=2), Rates(rpm=100))
    assert {k["id"]: (k["rpm"], k["max_concurrent"]) for k in listed} == {made["id"]: (30, 2), bare["id"]: (None, None)}


def test_rate_usage_shows_each_set_limit_as_the_limit_store_has_it(tmp_path: Path) -> None:
    """Requests taken through the limit store (as the pipeline takes them) show as used, per limit and model."""
    limits = MemoryLimitStore()
    moment = 1_000_000.0

    async def peek(wanted: Any) -> tuple[State, ...]:
        return await limits.peek(wanted, now=moment)

    async def main(store: Store) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        await service.create_team(store, LIMITED, TZ, catalog(), NOW)
        await service.create_team(store, {"name": "ops"}, TZ, now=NOW)
        team = await store.get_team("eng")
        assert team is not None
        taken = caller_limits(team, None) + model_limits(team, "kimi-k2")
        for holder in ("a", "b"):  # two requests of 1,000 tokens each, on kimi-k2, both still running
            grant = await limits.acquire(wants(taken, 1_000), holder, 60, now=moment)
            assert grant.ok
        shown = await service.get_team(store, "eng", TZ, NOW, peek)
        return shown, await service.list_teams(store, TZ, NOW, peek)

    shown, listed = using(tmp_path, main)
    usage = shown["rate_usage"]
    assert usage["rpm"] == {"limit": 60, "used": 2, "remaining": 58, "reset_seconds": 2.0}
    assert usage["tpm"]["limit"] == 100_000 and usage["tpm"]["used"] == 2_000 and usage["tpm"]["remaining"] == 98_000
    assert usage["max_concurrent"] == {"limit": 4, "used": 2, "remaining": 2, "reset_seconds": 0.0}
    assert usage["models"]["kimi-k2"]["rpm"] == {"limit": 3, "used": 2, "remaining": 1, "reset_seconds": 40.0}
    assert usage["models"]["kimi-k2"]["max_concurrent"] == {"limit": 2, "used": 2, "remaining": 0, "reset_seconds": 0.0}
    assert set(usage["models"]["kimi-k2"]) == {"rpm", "max_concurrent"}  # only the limits that are set
    assert usage["models"]["mistral-small"] == {
        "tpm": {"limit": 500_000, "used": 0, "remaining": 500_000, "reset_seconds": 0.0}
    }
    assert [t["name"] for t in listed] == ["eng", "ops"]
    assert listed[0] == shown and listed[1]["rate_usage"] == {"models": {}}


def test_rate_usage_is_null_when_the_limit_store_cannot_be_reached(tmp_path: Path) -> None:
    async def unreachable(wanted: Any) -> tuple[State, ...]:
        raise LimitsUnavailable("redis: timed out")

    async def no_call(wanted: list[Limit]) -> tuple[State, ...]:
        raise AssertionError("peek called for a team without limits")

    async def main(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
        await service.create_team(store, {"name": "eng", "rpm": 5}, TZ, now=NOW)
        await service.create_team(store, {"name": "ops"}, TZ, now=NOW)
        return await service.get_team(store, "eng", TZ, NOW, unreachable), await service.get_team(
            store, "ops", TZ, NOW, no_call
        )

    limited, unlimited = using(tmp_path, main)
    assert limited["rate_usage"] is None and limited["rpm"] == 5  # the team's settings stay readable
    assert unlimited["rate_usage"] == {"models": {}}
