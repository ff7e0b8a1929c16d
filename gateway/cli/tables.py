"""How the CLI prints tables: `table`, the one aligned-columns renderer (`route explain` uses it too), and the
teams, keys, spend and models tables built on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from gateway.admin import service as management
from gateway.catalog import Catalog
from gateway.money import NANOS_PER_USD
from gateway.providers.litellm_catalog import Difference, listed


def usd(nanos: int | None) -> str:
    """Readable USD: cents when exact, else every significant digit down to the nano-dollar."""
    if nanos is None:
        return "-"
    amount = Decimal(nanos) / NANOS_PER_USD
    cents = amount.quantize(Decimal("0.01"))
    text = str(cents) if cents == amount else format(amount.normalize(), "f")
    return f"${text}"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) if value else "(none)"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Aligned columns two spaces apart, the `right` columns (numbers) right-aligned, and no padding at the end
    of a line (a cell's own text is printed as it is). A cell is `str(value)`, except None ('-') and a list
    (joined with commas; '(none)' when empty)."""
    cells = [[str(h) for h in headers], *[[_text(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        shown = len(row)
        while shown and not row[shown - 1]:
            shown -= 1  # empty cells at the end of the row: nothing to align
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row[:shown])]
        if shown and shown - 1 not in right:
            parts[-1] = row[shown - 1]  # the last cell shown, unpadded
        lines.append("  ".join(parts))
    return "\n".join(lines)


def _details(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {_text(value)}" for label, value in pairs)


def _soft(team: Mapping[str, Any]) -> str:
    return f"{team['soft_limit_pct']}%" if team.get("soft_limit_pct") else "-"


RATE_FIELDS = (("rpm", "rpm"), ("tpm", "tpm"), ("max_concurrent", "max concurrent"))
UNKNOWN_USE = "known only by a running gateway (ask it: --url)"


def rates_text(rates: Mapping[str, Any]) -> str | None:
    """`rpm=60,max_concurrent=4`: the limits set (the syntax of `--model-limit`), or None when none is."""
    return ",".join(f"{field}={rates[field]}" for field, _ in RATE_FIELDS if rates.get(field) is not None) or None


def _model_limits_text(team: Mapping[str, Any]) -> str | None:
    limits = team.get("model_limits") or {}
    return " ".join(f"{model}:{rates_text(rates)}" for model, rates in limits.items()) or None


def _use_text(field: str, use: Mapping[str, Any] | None) -> str:
    if use is None:
        return ""
    if field == "max_concurrent":
        return f" ({use['used']} in use, {use['remaining']} free)"
    return f" ({use['used']} used, {use['remaining']} left, whole in {use['reset_seconds']:g}s)"


def _limit_lines(team: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The team's rate limits, each with its current use when the view has it (`rate_usage`)."""
    usage = team.get("rate_usage") or {}
    lines: list[tuple[str, Any]] = [
        (label, f"{team[field]}{_use_text(field, usage.get(field))}" if team.get(field) is not None else "no limit")
        for field, label in RATE_FIELDS
    ]
    models = team.get("model_limits") or {}
    used_by_model = usage.get("models") or {}
    texts = []
    for model, rates in models.items():
        use = used_by_model.get(model) or {}
        parts = [
            f"{label} {rates[f]}{_use_text(f, use.get(f))}" for f, label in RATE_FIELDS if rates.get(f) is not None
        ]
        texts.append(f"{model}: {', '.join(parts)}")
    lines.append(("model limits", texts[0] if texts else "none"))
    lines += [("", text) for text in texts[1:]]
    if team.get("rate_usage", {}) is None and (models or any(team.get(f) is not None for f, _ in RATE_FIELDS)):
        lines.append(("limits' use", UNKNOWN_USE))
    return lines


def render_team(team: Mapping[str, Any]) -> str:
    return _details(
        [
            ("name", team["name"]),
            ("budget", usd(team["budget_nanos"]) if team["budget_nanos"] is not None else "no limit"),
            ("period", team["period"]),
            ("period start", team.get("period_start")),
            ("resets at", team.get("period_resets_at") or "never (total)"),
            ("spent", usd(team.get("spent_nanos"))),
            ("reserved", usd(team.get("reserved_nanos"))),
            ("remaining", usd(team.get("remaining_nanos")) if team.get("remaining_nanos") is not None else "no limit"),
            ("soft limit", _soft(team)),
            ("regions", team["regions"] if team["regions"] is not None else "any"),
            ("models", team["models"] if team["models"] is not None else "any"),
            ("policy", team["policy"]),
            *_limit_lines(team),
            ("created", team["created_at"]),
        ]
    )


def render_teams(teams: Sequence[Mapping[str, Any]]) -> str:
    if not teams:
        return "no teams"
    headers = (
        "NAME",
        "BUDGET",
        "PERIOD",
        "SPENT",
        "RESERVED",
        "REMAINING",
        "RESETS AT",
        "SOFT",
        "REGIONS",
        "MODELS",
        "POLICY",
        "RPM",
        "TPM",
        "CONCURRENT",
        "MODEL LIMITS",
    )
    rows = [
        (
            t["name"],
            usd(t["budget_nanos"]),
            t["period"],
            usd(t["spent_nanos"]),
            usd(t["reserved_nanos"]),
            usd(t["remaining_nanos"]),
            t["period_resets_at"] or "never",
            _soft(t),
            t["regions"] or "any",
            t["models"] or "any",
            t["policy"],
            t.get("rpm"),
            t.get("tpm"),
            t.get("max_concurrent"),
            _model_limits_text(t),
        )
        for t in teams
    ]
    return table(headers, rows, right=(1, 3, 4, 5, 11, 12, 13))


def render_keys(keys: Sequence[Mapping[str, Any]]) -> str:
    if not keys:
        return "no keys"
    headers = ("ID", "PREFIX", "TEAM", "NAME", "BUDGET", "SPENT", "MODELS", "LIMITS", "EXPIRES", "STATUS")
    rows = [
        (
            k["id"],
            k["prefix"] + "...",
            k["team"],
            k["name"] or "-",
            usd(k["budget_nanos"]),
            usd(k.get("spent_nanos")),
            k["models"] or "any",
            rates_text(k),
            k["expires_at"] or "never",
            k["status"],
        )
        for k in keys
    ]
    return table(headers, rows, right=(4, 5))


def render_new_key(key: Mapping[str, Any]) -> str:
    details = _details(
        [
            ("id", key["id"]),
            ("team", key["team"]),
            ("name", key["name"] or "-"),
            ("budget", usd(key["budget_nanos"]) if key["budget_nanos"] is not None else "team budget only"),
            ("models", key["models"] if key["models"] is not None else "the team's"),
            ("limits", rates_text(key) or "the team's only"),
            ("expires", key["expires_at"] or "never"),
        ]
    )
    return f"{key['key']}\n\n{management.SHOWN_ONCE}\n\n{details}"


def render_spend(report: Mapping[str, Any]) -> str:
    group_by = report["group_by"]
    headers = ([group_by.upper()] if group_by else []) + ["REQUESTS", "PROMPT", "COMPLETION", "CACHED", "COST"]
    offset = 1 if group_by else 0

    def line(row: Mapping[str, Any], label: list[Any]) -> list[Any]:
        return label + [
            row["requests"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cached_tokens"],
            usd(row["cost_nanos"]),
        ]

    rows = [line(r, [r[group_by] if r[group_by] is not None else "(none)"]) for r in report["rows"]] if group_by else []
    rows.append(line(report["total"], ["TOTAL"] if group_by else []))
    return table(headers, rows, right=tuple(range(offset, offset + 5)))


def render_models(catalog: Catalog, differences: Mapping[str, Sequence[Difference]]) -> str:
    """`gateway models`: the catalog's models, and where litellm's bundled catalog says otherwise."""
    headers = (
        "MODEL",
        "PROVIDER",
        "REGION",
        "UPSTREAM",
        "WINDOW",
        "MAX OUT",
        "IN $/M",
        "OUT $/M",
        "CACHED $/M",
        "CAPABILITIES",
        "LITELLM",
    )
    rows = []
    for model in catalog.models.values():
        provider = catalog.provider_of(model)
        status = "differs*" if differences.get(model.name) else ("same" if listed(model) else "not listed")
        rows.append(
            (
                model.name,
                provider.name,
                provider.region,
                model.upstream_model,
                f"{model.context_window:,}",
                f"{model.max_output_tokens:,}",
                str(model.price.input),
                str(model.price.output),
                str(model.price.cached_input) if model.price.cached_input is not None else "-",
                ",".join(sorted(model.capabilities)),
                status,
            )
        )
    lines = [table(headers, rows)]
    notes = [d for diffs in differences.values() for d in diffs]
    if notes:
        lines.append("")
        lines.append("* differs from litellm's bundled catalog (the configured value is used):")
        lines.extend(f"  {d.model}: {d.field} is {d.ours} here, {d.litellm} in litellm" for d in notes)
    return "\n".join(lines)


def _usd_text(text: str) -> str:
    """An exact `usd_text` amount ('0.001250000') as `usd` shows it ($0.00125)."""
    return usd(int(Decimal(text) * NANOS_PER_USD))


def _replay_figures(row: Mapping[str, Any]) -> list[Any]:
    return [
        row["requests_before"],
        row["requests_after"],
        _usd_text(row["cost_before_usd"]),
        _usd_text(row["cost_after_usd"]),
    ]


def render_replay(report: Mapping[str, Any]) -> str:
    """`gateway replay`: a policy replay's report (`ReplayReport.as_dict()`), what happened next to what the replayed
    policies would have done: requests and cost per model, provider and team, region moves and refusals."""
    rows, cost, filters = report["rows"], report["cost"], report["filters"]
    skipped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in rows["skipped"].items()) or "none"
    delta = cost["delta_pct"]
    lines = [
        f"policies {report['policies']['source']} ({', '.join(report['policies']['names'])})",
        f"team {filters['team'] or 'all'}  from {filters['since']}  to {filters['until'] or 'now'}",
        f"requests replayed {rows['replayed']} ({rows['approximated']} approximated: recorded before their inputs were)"
        f"  skipped {skipped}",
        f"changed model {rows['changed_model']}  moved region {rows['moved_region']}  refused {rows['refused']}"
        f"  over budget {rows['over_budget']}",
        f"cost {_usd_text(cost['before_usd'])} -> {_usd_text(cost['after_usd'])}"
        f" ({'+' if cost['delta_nanos'] >= 0 else '-'}{_usd_text(cost['delta_usd'].lstrip('-'))}"
        + (f", {delta:+g}%" if delta is not None else "")
        + ")",
        "",
    ]
    figures = ["BEFORE", "AFTER", "COST BEFORE", "COST AFTER"]
    models = [[m["model"], m["provider"], m["region"], *_replay_figures(m)] for m in report["models"]]
    lines += [table(["MODEL", "PROVIDER", "REGION", *figures], models, right=(3, 4, 5, 6)), ""]
    providers = [[p["provider"], p["region"], *_replay_figures(p)] for p in report["providers"]]
    lines += [table(["PROVIDER", "REGION", *figures], providers, right=(2, 3, 4, 5)), ""]
    teams = [
        [t["team"], t["policy"], *_replay_figures(t), t["refused"], t["changed_model"], t["moved_region"]]
        for t in report["teams"]
    ]
    headers = ["TEAM", "POLICY", *figures, "REFUSED", "CHANGED", "MOVED"]
    lines.append(table(headers, teams, right=(2, 3, 4, 5, 6, 7, 8)))
    if report["region_moves"]:
        moves = [[m["from"], m["to"], m["requests"]] for m in report["region_moves"]]
        lines += ["", table(["REGION FROM", "TO", "REQUESTS"], moves, right=(2,))]
    for refused in report["refused"]:
        lines += ["", f"refused {refused['requests']}: {refused['status']} {refused['code']}"]
        for example in refused["examples"]:
            lines.append(f"  {example['id']} {example['ts']} team {example['team']}: {example['message']}")
    return "\n".join(lines)
