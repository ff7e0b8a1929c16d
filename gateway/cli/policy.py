"""The `gateway policy check|show` commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from gateway.catalog import Catalog, ConfigError
from gateway.policy.checks import Problem, check_policy_file, policy_files, policy_name
from gateway.policy.schema import CAPABILITIES, POLICIES_DIR_ENV, Policy
from gateway.policy.watcher import load_policies

# -- command line: `gateway policy check|show` ---------------------------------------------------


def default_policies_dir() -> Path:
    return Path(os.environ.get(POLICIES_DIR_ENV) or "policies")


def _catalog_for(args: argparse.Namespace) -> Catalog | None:
    from gateway.catalog import load_catalog
    from gateway.cli.common import config_path

    try:
        return load_catalog(config_path(args))
    except ConfigError as exc:
        print(f"gateway: configuration error\n{exc}", file=sys.stderr)
        return None


def _summary(policy: Policy, catalog: Catalog) -> str:
    chat = [m.name for m in policy.candidates(catalog, "chat")]
    return f"chat: {' > '.join(chat)}; named model: {policy.named_model}"


def cmd_policy_check(args: argparse.Namespace) -> int:
    catalog = _catalog_for(args)
    if catalog is None:
        return 2
    paths = args.paths or [default_policies_dir()]
    problems: list[Problem] = []
    checked = 0
    for path in paths:
        if path.is_dir():
            loaded = load_policies(path, catalog)
            problems.extend(loaded.problems)
            checked += len(policy_files(path))
            for name in sorted(loaded):
                print(f"{path / (name + '.yaml')}: OK ({_summary(loaded[name], catalog)})")
        elif path.is_file():
            policy, found = check_policy_file(path, catalog)
            problems.extend(found)
            checked += 1
            if policy is not None:
                print(f"{path}: OK ({_summary(policy, catalog)})")
        else:
            problems.append(Problem(str(path), "(path)", "no such file or directory"))
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if not p.warning or args.strict]
    if errors:
        print(
            f"gateway: {len(errors)} problem(s) in {checked} policy file(s), checked against {catalog.source}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    catalog = _catalog_for(args)
    if catalog is None:
        return 2
    name: str = args.name
    if name.endswith(".yaml") or os.sep in name or "/" in name:
        path = Path(name)
    else:
        path = (args.dir or default_policies_dir()) / f"{name}.yaml"
    if not path.is_file():
        directory = path.parent
        have = ", ".join(policy_name(p) for p in policy_files(directory)) if directory.is_dir() else "none"
        print(f"gateway: no policy file {path} (policies in {directory}: {have or 'none'})", file=sys.stderr)
        return 1
    policy, problems = check_policy_file(path, catalog)
    for problem in problems:
        print(problem, file=sys.stderr)
    if policy is None:
        return 1
    lines = [f"# {path}: effective policy (defaults filled in), checked against {catalog.source}"]
    for capability in CAPABILITIES:
        names = [m.name for m in policy.candidates(catalog, capability)]
        lines.append(f"#   {capability}: {', '.join(names) if names else '(no model: refused)'}")
    print("\n".join(lines))
    print(
        yaml.safe_dump(policy.effective(), sort_keys=False, allow_unicode=True, width=100, default_flow_style=None),
        end="",
    )
    return 0


def add_policy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `policy check` and `policy show` to the `gateway` command's subcommands."""

    def config_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config",
            type=Path,
            default=None,
            help="catalog file the policies are checked against (default: $GATEWAY_CONFIG or built-in defaults)",
        )

    where = f"${POLICIES_DIR_ENV} or policies/"
    policy = commands.add_parser("policy", help="check and show routing policies (policies/*.yaml)")
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate policy files against the catalog; exit 1 on any error",
        description="Validate policy files (unknown fields, models or regions, unreachable rules). Prints an OK line "
        "per valid file on stdout, and each problem as FILE: FIELD: MESSAGE on stderr. Exit 0 when no file has an "
        "error (warnings do not count unless --strict), 1 otherwise, 2 when the catalog itself is broken.",
    )
    check.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help=f"policy files or directories (default: {where})"
    )
    config_option(check)
    check.add_argument("--strict", action="store_true", help="count warnings as problems (exit 1)")
    check.set_defaults(func=cmd_policy_check)
    show = actions.add_parser(
        "show",
        help="print a policy with every default filled in, as YAML",
        description="Print the effective policy (every default filled in) as YAML, after the models it allows for "
        "each capability in preference order. Exit 1 if it is missing or invalid.",
    )
    show.add_argument("name", metavar="NAME", help="a policy name (NAME.yaml in --dir) or a path to a policy file")
    show.add_argument("--dir", type=Path, default=None, help=f"the policies directory (default: {where})")
    config_option(show)
    show.set_defaults(func=cmd_policy_show)
