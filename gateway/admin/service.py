"""Teams, keys and spend reports: the service layer under the admin API and the admin CLI.

Both `gateway/http/admin.py` and the CLI's direct-database mode call these
functions, so the two give the same answers and the same errors. Nothing here
knows about HTTP: bad input raises `GatewayError(400, ..., param=FIELD)`, which
the API turns into an OpenAI-style error and the CLI into a message.

Money is exact nano-dollar integers in the store; results carry both an exact
`*_nanos` integer and a `*_usd` number (for display; never summed).

Rate limits (`rpm`, `tpm`, `max_concurrent` of a team and of a key, and a team's
`model_limits` per model) are whole numbers >= 1, null for no limit. Their
current use lives in the gateway's limit store, not in the database: the team
views take an optional `peek` (the running gateway's `LimitStore.peek`) and show
`rate_usage: null` without one (the CLI's direct mode).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from gateway.auth.keys import generate_key, hash_key, new_key_id, visible_prefix
from gateway.auth.principal import ADMIN_TEAM
from gateway.budget.periods import PERIODS, period_window
from gateway.catalog import Catalog
from gateway.errors import GatewayError
from gateway.limits.base import Limit, LimitsUnavailable, State
from gateway.limits.callers import rate_limits
from gateway.limits.callers import team_model_scope as limit_team_model_scope
from gateway.limits.callers import team_scope as limit_team_scope
from gateway.money import usd_float, usd_text, usd_to_nanos
from gateway.policy.schema import POLICY_PATTERN
from gateway.store import Store
from gateway.store.base import (
    GROUPS,
    NO_RATES,
    Conflict,
    KeyRecord,
    Rates,
    SpendFilter,
    SpendRow,
    Team,
    key_scope,
    team_scope,
)

TEAM_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_BUDGET_USD = Decimal(9_000_000_000)  # a signed 64-bit nano-dollar column holds about 9.2e9 USD
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: larger numbers are almost surely milliseconds
SHOWN_ONCE = "Store this key now: it is shown only once and cannot be recovered."
RATE_FIELDS = ("rpm", "tpm", "max_concurrent")
MAX_RATE = 1_000_000_000_000  # far above any provider's tier (Moonshot's top: 5M TPM), far below a BIGINT's range
# The limit kinds of gateway/limits/ by the field names of the admin API.
RATE_FIELD_OF_KIND = {"rpm": "rpm", "tpm": "tpm", "concurrency": "max_concurrent"}

Peek = Callable[[Sequence[Limit]], Awaitable[tuple[State, ...]]]


# -- input models ------------------------------------------------------------------------------


def _decimal_usd(value: Any) -> Decimal | None:
    """USD from a JSON number or a numeric string, exactly (Decimal(str(x)), never via binary float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("must be a number of USD (or a numeric string), or null")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a number") from exc
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount < 0:
        raise ValueError("must not be negative")
    if amount > MAX_BUDGET_USD:
        raise ValueError(f"must be at most {MAX_BUDGET_USD} USD")
    return amount


def _names(value: list[str] | None) -> list[str] | None:
    """A list of non-empty names without duplicates (order kept), or None for 'no restriction'."""
    if value is None:
        return None
    out: list[str] = []
    for item in value:
        item = item.strip()
        if not item:
            raise ValueError("must not contain empty names")
        if item not in out:
            out.append(item)
    return out


def _check_period(value: str) -> str:
    if value not in PERIODS:
        raise ValueError(f"unknown period {value!r}: use one of {', '.join(PERIODS)}")
    return value


def _check_soft_limit(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 100:
        raise ValueError("must be a whole percentage from 1 to 100, or null")
    return value


def _rate(value: Any) -> int | None:
    """A rate limit: a whole number from 1 to MAX_RATE, or None (no limit). Not a bool, not 60.0, not "60"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise ValueError(f"must be a whole number from 1 to {MAX_RATE}, or null")
    return value


ModelLimitsPatch = dict[str, dict[str, int | None] | None]


def _model_limits_patch(value: Any) -> ModelLimitsPatch | None:
    """{MODEL: {rpm, tpm, max_concurrent}}: each model's entry an object of (some of) those fields, each a whole
    number >= 1 or null; an entry may be null (on PATCH: that model's limits are removed)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("must be an object {MODEL: {rpm, tpm, max_concurrent}}, or null")
    out: ModelLimitsPatch = {}
    for model, entry in value.items():
        name = str(model).strip()
        if not name:
            raise ValueError("must not contain an empty model name")
        if entry is None:
            out[name] = None
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{name!r} must be an object of rpm, tpm and max_concurrent, or null")
        unknown = [field for field in entry if field not in RATE_FIELDS]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} in {name!r} (use {', '.join(RATE_FIELDS)})")
        limits: dict[str, int | None] = {}
        for field, amount in entry.items():
            try:
                limits[field] = _rate(amount)
            except ValueError as exc:
                raise ValueError(f"{name!r}: {field} {exc}") from None
        out[name] = limits
    return out


def _merged_model_rates(current: Mapping[str, Rates], patch: ModelLimitsPatch) -> dict[str, Rates]:
    """`current` with `patch` applied the way PATCH applies a body to a team (a JSON merge patch): a model not
    named keeps its limits, a null entry removes them, and within an entry a field not given keeps its value and
    a null one clears it. A model left without any limit is dropped."""
    out = dict(current)
    for model, entry in patch.items():
        rates = NO_RATES if entry is None else replace(out.get(model, NO_RATES), **entry)
        if rates:
            out[model] = rates
        else:
            out.pop(model, None)
    return out


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(pattern=TEAM_NAME_PATTERN)
    budget_usd: Decimal | None = None
    period: StrictStr = "monthly"
    soft_limit_pct: StrictInt | None = None
    regions: list[StrictStr] | None = None
    models: list[StrictStr] | None = None
    policy: StrictStr = Field("default", pattern=POLICY_PATTERN)
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    model_limits: ModelLimitsPatch | None = None

    _budget = field_validator("budget_usd", mode="before")(_decimal_usd)
    _period = field_validator("period")(_check_period)
    _soft = field_validator("soft_limit_pct")(_check_soft_limit)
    _lists = field_validator("regions", "models")(_names)
    _rates = field_validator(*RATE_FIELDS, mode="before")(_rate)
    _model_limits = field_validator("model_limits", mode="before")(_model_limits_patch)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == ADMIN_TEAM:
            raise ValueError(f"'{ADMIN_TEAM}' is the built-in team of the master key and cannot be created")
        return value


class TeamUpdate(BaseModel):
    """A partial update: only the fields present change; null clears a limit."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: Decimal | None = None
    period: StrictStr | None = None  # None here only means "absent": an explicit null is refused below
    soft_limit_pct: StrictInt | None = None
    regions: list[StrictStr] | None = None
    models: list[StrictStr] | None = None
    policy: StrictStr | None = Field(None, pattern=POLICY_PATTERN)
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    model_limits: ModelLimitsPatch | None = None  # merged into the team's (see `_merged_model_rates`)

    _budget = field_validator("budget_usd", mode="before")(_decimal_usd)
    _soft = field_validator("soft_limit_pct")(_check_soft_limit)
    _lists = field_validator("regions", "models")(_names)
    _rates = field_validator(*RATE_FIELDS, mode="before")(_rate)
    _model_limits = field_validator("model_limits", mode="before")(_model_limits_patch)

    @field_validator("period")
    @classmethod
    def _period(cls, value: str | None) -> str:
        # Validators do not run on defaults, so None here is an explicit null.
        return _check_period(_not_null(value))

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None) -> str:
        return _not_null(value)


def _not_null(value: str | None) -> str:
    if value is None:
        raise ValueError("must not be null")
    return value


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team: StrictStr = Field(min_length=1)
    name: StrictStr = Field("", max_length=200)
    budget_usd: Decimal | None = None
    models: list[StrictStr] | None = None
    expires_at: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    _budget = field_validator("budget_usd", mode="before")(_decimal_usd)
    _lists = field_validator("models")(_names)
    _rates = field_validator(*RATE_FIELDS, mode="before")(_rate)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> int | None:
        return parse_time(value) if value is not None else None


class SpendQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team: StrictStr | None = None
    key: StrictStr | None = None
    model: StrictStr | None = None
    provider: StrictStr | None = None
    since: float | None = None
    until: float | None = None
    batch: StrictStr | None = None  # a batch's id: only its lines
    group_by: StrictStr | None = None
    format: StrictStr = "json"

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time(cls, value: Any) -> float | None:
        return float(parse_time(value)) if value not in (None, "") else None

    @field_validator("group_by")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value in (None, "", "none"):
            return None
        if value not in GROUPS:
            raise ValueError(f"unknown grouping {value!r}: use one of {', '.join(GROUPS)}")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("json", "csv"):
            raise ValueError("use json or csv")
        return value


def parse_time(value: Any) -> int:
    """Unix seconds from Unix seconds (number or digits) or ISO-8601 (a date means its midnight; naive means UTC)."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 date-time or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError as exc:
                raise ValueError(f"{value!r} is neither an ISO-8601 date-time nor Unix seconds") from exc
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    else:
        raise ValueError("must be an ISO-8601 date-time or Unix seconds")
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise ValueError(f"{value!r} is out of range (Unix seconds, not milliseconds)")
    return int(seconds)


def _validate(model: type[BaseModel], body: Mapping[str, Any]) -> Any:
    """Parse `body`, turning the first problem into a 400 that names the field."""
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        kind = error["type"]
        if kind == "extra_forbidden":
            raise GatewayError(
                400, f"Unknown field '{field}'.", "invalid_request_error", "unknown_field", field
            ) from exc
        if kind == "missing":
            raise GatewayError(400, f"'{field}' is required.", "invalid_request_error", "missing_field", field) from exc
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind == "string_pattern_mismatch" and field == "name":
            message = "must be 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        raise GatewayError(
            400, f"Invalid '{field}': {message}.", "invalid_request_error", "invalid_value", field
        ) from exc


# -- output shapes ---------------------------------------------------------------------------


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _money(prefix: str, nanos: int | None) -> dict[str, Any]:
    return {
        f"{prefix}_usd": round(usd_float(nanos), 9) if nanos is not None else None,
        f"{prefix}_nanos": nanos,
    }


def _nanos(amount: Decimal | None) -> int | None:
    return usd_to_nanos(amount) if amount is not None else None


def rates_view(rates: Rates) -> dict[str, int | None]:
    return {"rpm": rates.rpm, "tpm": rates.tpm, "max_concurrent": rates.max_concurrent}


def team_view(team: Team) -> dict[str, Any]:
    return {
        "name": team.name,
        **_money("budget", team.budget_nanos),
        "period": team.period,
        "soft_limit_pct": team.soft_limit_pct,
        "regions": team.regions,
        "models": team.models,
        "policy": team.policy,
        **rates_view(team.rates),
        "model_limits": {model: rates_view(team.model_rates[model]) for model in sorted(team.model_rates)},
        "created_at": iso(team.created_at),
    }


def key_view(key: KeyRecord, now: float) -> dict[str, Any]:
    """Everything about a key except its hash (and its plaintext, which is never stored)."""
    if key.revoked_at is not None:
        status = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        status = "expired"
    else:
        status = "active"
    return {
        "id": key.id,
        "prefix": key.prefix,
        "team": key.team,
        "name": key.name,
        **_money("budget", key.budget_nanos),
        "models": key.models,
        **rates_view(key.rates),
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
        "revoked_at": iso(key.revoked_at),
        "status": status,
    }


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# -- catalog checks ----------------------------------------------------------------------------


def _check_models(models: list[str] | None, catalog: Catalog | None) -> None:
    if models is None or catalog is None:
        return
    unknown = [m for m in models if m not in catalog.models]
    if unknown:
        raise GatewayError(
            400,
            f"Invalid 'models': unknown model {unknown[0]!r} (the catalog has: {', '.join(catalog.models)}).",
            "invalid_request_error",
            "unknown_model",
            "models",
        )


def _check_limit_models(patch: ModelLimitsPatch | None, catalog: Catalog | None) -> None:
    """Models given limits must be in the catalog (a typo would limit nothing); removing a model's limits is
    allowed whatever the catalog holds now."""
    if patch is None or catalog is None:
        return
    setting = [m for m, entry in patch.items() if entry is not None and any(v is not None for v in entry.values())]
    unknown = [m for m in setting if m not in catalog.models]
    if unknown:
        raise GatewayError(
            400,
            f"Invalid 'model_limits': unknown model {unknown[0]!r} (the catalog has: {', '.join(catalog.models)}).",
            "invalid_request_error",
            "unknown_model",
            "model_limits",
        )


def _check_regions(regions: list[str] | None, catalog: Catalog | None) -> None:
    if regions is None or catalog is None:
        return
    known = catalog.regions
    unknown = [r for r in regions if r not in known]
    if unknown:
        raise GatewayError(
            400,
            f"Invalid 'regions': unknown region {unknown[0]!r} (the catalog's providers run in: {', '.join(known)}).",
            "invalid_request_error",
            "unknown_region",
            "regions",
        )


def _check_policy(name: str | None, policies: Collection[str] | None) -> None:
    """A team's policy must be one the gateway has: an unknown name (`eu_only` for `eu-only`) would leave the
    team without the routing rules it was meant to get."""
    if name is None or policies is None or name in policies:
        return
    raise GatewayError(
        400,
        f"Invalid 'policy': unknown policy {name!r} (known: {', '.join(sorted(policies)) or 'none'}).",
        "invalid_request_error",
        "unknown_policy",
        "policy",
    )


def _team_not_found(name: str) -> GatewayError:
    return GatewayError(404, f"Team {name!r} does not exist.", "invalid_request_error", "team_not_found")


# -- teams -------------------------------------------------------------------------------------


def _team_limits(team: Team) -> list[tuple[str | None, Limit]]:
    """The team's limits, each with the model it applies to (None: the team's own, on every model)."""
    limits: list[tuple[str | None, Limit]] = [
        (None, lim) for lim in rate_limits(limit_team_scope(team.name), team.rates)
    ]
    for model in sorted(team.model_rates):
        scope = limit_team_model_scope(team.name, model)
        limits += [(model, lim) for lim in rate_limits(scope, team.model_rates[model])]
    return limits


def _use(state: State) -> dict[str, Any]:
    amount = state.limit.amount
    remaining = max(0, min(amount, state.remaining))
    return {
        "limit": amount,
        "used": amount - remaining,
        "remaining": remaining,
        "reset_seconds": round(max(0.0, state.reset_seconds), 3),
    }


async def rate_usages(teams: Sequence[Team], peek: Peek | None) -> list[dict[str, Any] | None]:
    """For each team, the current use of each of its limits: {FIELD: {limit, used, remaining, reset_seconds},
    "models": {MODEL: {FIELD: ...}}} with only the limits that are set; None when it cannot be known here (no
    limit store, or it cannot be reached). One `peek` for all the teams."""
    limits = [_team_limits(team) for team in teams]
    wanted = [lim for team_limits in limits for _, lim in team_limits]
    states: Sequence[State] = ()
    known = True
    if wanted:
        if peek is None:
            known = False
        else:
            try:
                states = await peek(wanted)
            except LimitsUnavailable:  # a team's settings must stay readable while Redis is down
                known = False
    out: list[dict[str, Any] | None] = []
    position = 0
    for team_limits in limits:
        if team_limits and not known:
            out.append(None)
            continue
        own: dict[str, Any] = {}
        models: dict[str, dict[str, Any]] = {}
        for model, _ in team_limits:
            state = states[position]
            position += 1
            place = own if model is None else models.setdefault(model, {})
            place[RATE_FIELD_OF_KIND[state.limit.kind]] = _use(state)
        out.append({**own, "models": models})
    return out


async def team_status(
    store: Store, team: Team, tz: str, now: datetime | None = None, peek: Peek | None = None
) -> dict[str, Any]:
    """The team with its spend in the current period (spent, reserved by requests in flight, remaining) and the
    current use of its rate limits (`rate_usages`)."""
    return await _team_status(store, team, tz, _now(now), (await rate_usages([team], peek))[0])


async def _team_status(
    store: Store, team: Team, tz: str, now: datetime, rate_usage: dict[str, Any] | None
) -> dict[str, Any]:
    start, end = period_window(team.period, tz, now)
    usage = await store.usage(team_scope(team.name), start)
    remaining = team.budget_nanos - usage.spent_nanos - usage.reserved_nanos if team.budget_nanos is not None else None
    return {
        **team_view(team),
        "period_start": iso(start),
        "period_resets_at": iso(end),
        **_money("spent", usage.spent_nanos),
        **_money("reserved", usage.reserved_nanos),
        **_money("remaining", remaining),
        "rate_usage": rate_usage,
    }


async def create_team(
    store: Store,
    body: Mapping[str, Any],
    tz: str,
    catalog: Catalog | None = None,
    now: datetime | None = None,
    policies: Collection[str] | None = None,
    peek: Peek | None = None,
) -> dict[str, Any]:
    """Create a team. `catalog` and `policies` (the names of the policies in use) check its models (and those of
    its model_limits), regions and policy; None skips that check. `peek`: see `rate_usages`."""
    spec: TeamCreate = _validate(TeamCreate, body)
    _check_regions(spec.regions, catalog)
    _check_models(spec.models, catalog)
    _check_limit_models(spec.model_limits, catalog)
    _check_policy(spec.policy, policies)
    moment = _now(now)
    team = Team(
        name=spec.name,
        budget_nanos=_nanos(spec.budget_usd),
        period=spec.period,
        soft_limit_pct=spec.soft_limit_pct,
        regions=spec.regions,
        models=spec.models,
        policy=spec.policy,
        created_at=int(moment.timestamp()),
        rates=Rates(spec.rpm, spec.tpm, spec.max_concurrent),
        model_rates=_merged_model_rates({}, spec.model_limits or {}),
    )
    try:
        await store.create_team(team)
    except Conflict as exc:  # the primary key decides, so two concurrent creates cannot both win
        raise GatewayError(
            400,
            f"Invalid 'name': a team named {spec.name!r} already exists.",
            "invalid_request_error",
            "duplicate",
            "name",
        ) from exc
    return await team_status(store, team, tz, moment, peek)


async def get_team(
    store: Store, name: str, tz: str, now: datetime | None = None, peek: Peek | None = None
) -> dict[str, Any]:
    team = await store.get_team(name)
    if team is None:
        raise _team_not_found(name)
    return await team_status(store, team, tz, now, peek)


async def list_teams(
    store: Store, tz: str, now: datetime | None = None, peek: Peek | None = None
) -> list[dict[str, Any]]:
    moment = _now(now)
    teams = await store.list_teams()
    usages = await rate_usages(teams, peek)
    return [await _team_status(store, team, tz, moment, usage) for team, usage in zip(teams, usages, strict=True)]


async def update_team(
    store: Store,
    name: str,
    body: Mapping[str, Any],
    tz: str,
    catalog: Catalog | None = None,
    now: datetime | None = None,
    policies: Collection[str] | None = None,
    peek: Peek | None = None,
) -> dict[str, Any]:
    """Change the fields given (null clears a limit or a restriction); `model_limits` is merged into the team's
    (see `_merged_model_rates`)."""
    if "name" in body:
        raise GatewayError(
            400, "Invalid 'name': a team cannot be renamed.", "invalid_request_error", "invalid_value", "name"
        )
    spec: TeamUpdate = _validate(TeamUpdate, body)
    team = await store.get_team(name)
    if team is None:
        raise _team_not_found(name)
    given = spec.model_fields_set
    if "regions" in given:
        _check_regions(spec.regions, catalog)
        team.regions = spec.regions
    if "models" in given:
        _check_models(spec.models, catalog)
        team.models = spec.models
    if "budget_usd" in given:
        team.budget_nanos = _nanos(spec.budget_usd)
    if spec.period is not None:
        team.period = spec.period
    if "soft_limit_pct" in given:
        team.soft_limit_pct = spec.soft_limit_pct
    if spec.policy is not None:
        _check_policy(spec.policy, policies)
        team.policy = spec.policy
    rates = {field: getattr(spec, field) for field in RATE_FIELDS if field in given}
    if rates:
        team.rates = replace(team.rates, **rates)
    if "model_limits" in given:
        _check_limit_models(spec.model_limits, catalog)
        patch = spec.model_limits
        team.model_rates = {} if patch is None else _merged_model_rates(team.model_rates, patch)
    await store.update_team(team)
    return await team_status(store, team, tz, now, peek)


async def delete_team(store: Store, name: str) -> dict[str, Any]:
    keys = await store.list_keys(name)
    if not await store.delete_team(name):
        raise _team_not_found(name)
    return {"name": name, "deleted": True, "keys_deleted": len(keys)}


# -- keys --------------------------------------------------------------------------------------


async def create_key(
    store: Store, body: Mapping[str, Any], catalog: Catalog | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Make a key; the result holds the plaintext key, which is returned here and never again."""
    spec: KeyCreate = _validate(KeyCreate, body)
    moment = _now(now).timestamp()
    if spec.expires_at is not None and spec.expires_at <= moment:
        raise GatewayError(
            400,
            f"Invalid 'expires_at': {iso(spec.expires_at)} is in the past.",
            "invalid_request_error",
            "invalid_value",
            "expires_at",
        )
    team = await store.get_team(spec.team)
    if team is None:
        raise GatewayError(
            400,
            f"Invalid 'team': team {spec.team!r} does not exist.",
            "invalid_request_error",
            "team_not_found",
            "team",
        )
    _check_models(spec.models, catalog)
    if spec.models is not None and team.models is not None:
        outside = [m for m in spec.models if m not in team.models]
        if outside:
            raise GatewayError(
                400,
                f"Invalid 'models': {outside[0]!r} is not among the models of team {team.name!r} ({', '.join(team.models)}).",
                "invalid_request_error",
                "model_not_allowed",
                "models",
            )
    plaintext = generate_key()
    record = KeyRecord(
        id=new_key_id(),
        team=team.name,
        name=spec.name,
        prefix=visible_prefix(plaintext),
        key_hash=hash_key(plaintext),
        budget_nanos=_nanos(spec.budget_usd),
        models=spec.models,
        expires_at=spec.expires_at,
        created_at=int(moment),
        rates=Rates(spec.rpm, spec.tpm, spec.max_concurrent),
    )
    await store.create_key(record)
    return {**key_view(record, moment), "key": plaintext, "note": SHOWN_ONCE}


async def _key_status(store: Store, key: KeyRecord, team: Team | None, tz: str, now: datetime) -> dict[str, Any]:
    view = key_view(key, now.timestamp())
    spent = 0
    if team is not None:  # a key's budget runs over its team's period
        start, _ = period_window(team.period, tz, now)
        spent = (await store.usage(key_scope(key.id), start)).spent_nanos
    return {**view, **_money("spent", spent)}


async def list_keys(
    store: Store, tz: str, team: str | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    moment = _now(now)
    if team is not None and await store.get_team(team) is None:
        raise _team_not_found(team)
    teams = {t.name: t for t in await store.list_teams()}
    return [await _key_status(store, k, teams.get(k.team), tz, moment) for k in await store.list_keys(team)]


async def get_key(store: Store, key_id: str, tz: str, now: datetime | None = None) -> dict[str, Any]:
    key = await store.get_key(key_id)
    if key is None:
        raise _key_not_found(key_id)
    return await _key_status(store, key, await store.get_team(key.team), tz, _now(now))


async def revoke_key(store: Store, key_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Revoke at once (every process's key cache hears of it from the database, or keeps a key at most its fallback
    lifetime); revoking twice is not an error."""
    moment = _now(now).timestamp()
    key = await store.get_key(key_id)
    if key is None:
        raise _key_not_found(key_id)
    if key.revoked_at is None:
        await store.revoke_key(key_id, int(moment))
        key = await store.get_key(key_id) or key
    return key_view(key, moment)


def _key_not_found(key_id: str) -> GatewayError:
    return GatewayError(404, f"Key {key_id!r} does not exist.", "invalid_request_error", "key_not_found")


# -- spend -------------------------------------------------------------------------------------

TOKEN_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")


def parse_spend_query(params: Mapping[str, Any]) -> SpendQuery:
    # An empty query parameter (`?team=`) means "not given", as forms and shells tend to send them.
    return _validate(SpendQuery, {k: v for k, v in params.items() if v not in (None, "")})


def _spend_row(row: SpendRow, group_by: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {group_by: row.group} if group_by else {}
    out.update({c: getattr(row, c) for c in TOKEN_COLUMNS})
    out.update(_money("cost", row.cost_nanos))
    return out


async def spend_report(store: Store, params: Mapping[str, Any] | SpendQuery) -> dict[str, Any]:
    """Ledger totals, filtered and grouped; `total` is the sum of `rows` (computed by the database too)."""
    query = params if isinstance(params, SpendQuery) else parse_spend_query(params)
    filters = SpendFilter(query.team, query.key, query.model, query.provider, query.since, query.until, query.batch)
    rows = await store.spend(filters, query.group_by) if query.group_by else []
    total = (await store.spend(filters, None))[0]
    return {
        "object": "spend_report",
        "group_by": query.group_by,
        "filters": {
            "team": query.team,
            "key": query.key,
            "model": query.model,
            "provider": query.provider,
            "since": iso(query.since),
            "until": iso(query.until),
            "batch": query.batch,
        },
        "rows": [_spend_row(r, query.group_by) for r in rows],
        "total": _spend_row(total, None),
    }


def spend_csv(report: Mapping[str, Any]) -> str:
    """One line per row (the total alone when ungrouped); cost_usd exact to the nano-dollar."""
    group_by = report["group_by"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(([group_by] if group_by else []) + [*TOKEN_COLUMNS, "cost_usd"])
    rows = report["rows"] if group_by else [report["total"]]
    for row in rows:
        group = [row[group_by] if row[group_by] is not None else ""] if group_by else []
        writer.writerow(group + [row[c] for c in TOKEN_COLUMNS] + [usd_text(row["cost_nanos"])])
    return out.getvalue()
