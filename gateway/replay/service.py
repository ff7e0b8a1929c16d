"""A replay asked for in JSON (`POST /admin/replay`, `gateway replay`): which policies, which team, which window.

    {"policy_yaml": "...one policy file...", "policy_name": "eu-only"}    the current set, with this policy added or
                                                                          replaced ("policy_name" optional: the
                                                                          file's name, else the text's `name:`)
    {"policy_files": {"default.yaml": "...", "eu-only.yaml": "..."}}     a whole set instead (as a directory)
    (neither: the current policies, replayed as a baseline)
    "team": "web" | null, "since": "30d" | ISO-8601 | Unix seconds (default 30d), "until": the same | null (now)

A request names no path on the gateway's machine (`policy_dir` is refused: an admin API that opened any file it
was given would tell its caller about files the gateway can read); `gateway replay --policy DIR` reads a directory
on the machine it runs on, and sends the files' text with `--url`.

Bad input is a 400 naming the field (`param`); a policy that does not validate is a 400 `invalid_policy` whose
message has one line per problem, each naming the file and the field.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.admin.service import parse_time
from gateway.catalog import Catalog
from gateway.errors import GatewayError
from gateway.policy import DEFAULT_POLICY, PolicyError, PolicySet, Problem, check_policy_text
from gateway.replay.engine import replay
from gateway.replay.policies import policy_set_from_text
from gateway.store.base import Store

FIELDS = ("policy_yaml", "policy_name", "policy_files", "team", "since", "until")
POLICY_SOURCES = ("policy_yaml", "policy_files")
DEFAULT_SINCE = "30d"
DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _bad(field: str, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, f"Invalid '{field}': {message}.", "invalid_request_error", code, field)


def parse_moment(value: Any, field: str, now: float) -> float:
    """A moment: a duration back from now (`30d`, `12h`, `90m`, `2w`), ISO-8601 or Unix seconds."""
    if isinstance(value, str) and (match := DURATION.match(value.strip())):
        return now - int(match.group(1)) * DURATION_SECONDS[match.group(2)]
    try:
        return float(parse_time(value))
    except ValueError as exc:
        raise _bad(field, f"{exc}; or a duration back from now such as 30d, 12h, 2w") from exc


def policy_set_from_files(files: Mapping[str, str], catalog: Catalog, source: str) -> PolicySet:
    """A whole policy set from file names and texts, validated as `load_policies` validates a directory."""
    policies = {}
    problems: list[Problem] = []
    for name, text in sorted(files.items()):
        stem = Path(name).name.removesuffix(".yaml")
        policy, found = check_policy_text(text, f"{stem}.yaml", stem, catalog)
        problems.extend(found)
        if policy is not None:
            policies[policy.name] = policy
    if DEFAULT_POLICY not in policies and not any(p.source == f"{DEFAULT_POLICY}.yaml" for p in problems):
        problems.append(
            Problem(
                source,
                "(files)",
                f"no {DEFAULT_POLICY}.yaml: teams use the policy '{DEFAULT_POLICY}' unless they name another",
            )
        )
    errors = [p for p in problems if not p.warning]
    if errors:
        raise PolicyError(source, errors)
    return PolicySet(source, policies, problems)


def replay_policies(body: Mapping[str, Any], catalog: Catalog, current: PolicySet) -> PolicySet:
    """The policies a request body asks to replay (see the module docstring); PolicyError if they do not validate."""
    given = [name for name in POLICY_SOURCES if body.get(name) is not None]
    if len(given) > 1:
        raise _bad(given[1], f"give one of {', '.join(POLICY_SOURCES)}, not several", "conflicting_fields")
    name = body.get("policy_name")
    if name is not None and not isinstance(name, str):
        raise _bad("policy_name", "must be a string")
    if not given:
        return current
    if given[0] == "policy_yaml":
        text = body["policy_yaml"]
        if not isinstance(text, str):
            raise _bad("policy_yaml", "must be the text of one policy file")
        return policy_set_from_text(name or "", text, catalog, current)
    if given[0] == "policy_files":
        files = body["policy_files"]
        if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
            raise _bad("policy_files", "must be an object of file names and their texts")
    return policy_set_from_files(files, catalog, "(policy_files)")


def invalid_policy(error: PolicyError) -> GatewayError:
    return GatewayError(
        400,
        "The policy does not validate:\n" + "\n".join(str(p) for p in error.findings if not p.warning),
        "invalid_request_error",
        "invalid_policy",
    )


async def replay_request(
    store: Store,
    catalog: Catalog,
    current: PolicySet,
    body: Mapping[str, Any],
    *,
    default_expected_output: int,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """Run the replay a JSON body asks for and return its report (`ReplayReport.as_dict()`)."""
    for field in body:
        if field == "policy_dir":  # (what an earlier release accepted: refused by name, not as unknown)
            raise _bad(
                "policy_dir",
                "is not accepted: a request names no path on the gateway's machine; send the files' text as "
                "policy_files (gateway replay --policy DIR --url ... does)",
            )
        if field not in FIELDS:
            raise GatewayError(
                400,
                f"Unknown field '{field}' (known: {', '.join(FIELDS)}).",
                "invalid_request_error",
                "unknown_field",
                field,
            )
    team = body.get("team")
    if team is not None and not isinstance(team, str):
        raise _bad("team", "must be a team's name")
    now = time.time()
    given_since, given_until = body.get("since"), body.get("until")
    since = parse_moment(DEFAULT_SINCE if given_since is None or given_since == "" else given_since, "since", now)
    until = None if given_until is None or given_until == "" else parse_moment(given_until, "until", now)
    if until is not None and until <= since:
        raise _bad("until", "must be later than since")
    try:
        policies = replay_policies(body, catalog, current)
    except PolicyError as error:
        raise invalid_policy(error) from error
    report = await replay(
        store,
        catalog,
        policies,
        team=team or None,
        since=since,
        until=until,
        default_expected_output=default_expected_output,
        timezone=timezone,
    )
    return report.as_dict()
