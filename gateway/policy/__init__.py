"""Routing policies: declarative YAML files (`policies/NAME.yaml`), their schema, loading, validation and reload.

A team names its policy (`default` unless it names another). A policy says which
models the team may use, in which regions, in what order of preference, what to
do when a prompt does not fit a model's window or the budget runs low, what to
do with a request that names a model the policy forbids, and when to retry and
fall back, and which model a client-chosen name (Claude Code's `claude-...` ids) stands for (`aliases`).
`policies/README.md` documents every field.

This module only describes and checks policies; the routing pipeline applies
them. What it gives the pipeline is pure: `Policy.candidates`, `Policy.fits`,
`Policy.cheapest`, `Policy.downgrades` read nothing but their arguments.
`PolicyWatcher` keeps the last good `PolicySet` and swaps in a new one only
when the whole directory validates, so a broken edit never replaces a working
version (in-flight requests keep the `Policy` object they started with).

Problems name the file and the field path, as `gateway.catalog` does for the
catalog: `policies/x.yaml: prefer[1]: unknown model 'gpt-5' (known: ...) (line 7)`.

Modules: `schema` (the pydantic models), `checks` (loading one file and validating it: `Problem`,
`PolicyError`, `check_policy_text`, ...), `watcher` (`PolicySet`, `load_policies`, `PolicyWatcher`) (the `gateway policy` commands are in `gateway.cli.policy`). The public API is re-exported here.
"""

from __future__ import annotations

from gateway.policy.checks import (
    PolicyError,
    Problem,
    check_policy_file,
    check_policy_text,
    load_policy_file,
    policy_files,
)
from gateway.policy.schema import (
    CAPABILITIES,
    CHEAPEST,
    CLAUDE_CODE_ALIASES,
    DEFAULT_POLICY,
    FAILURE_KINDS,
    POLICIES_DIR_ENV,
    Alias,
    BudgetRules,
    ContextRules,
    Fallbacks,
    Policy,
)
from gateway.policy.watcher import (
    PolicySet,
    PolicyWatcher,
    ReloadResult,
    builtin_policies,
    load_policies,
    missing_policies,
    policies_for_settings,
)

__all__ = [
    "Alias",
    "BudgetRules",
    "CAPABILITIES",
    "CHEAPEST",
    "CLAUDE_CODE_ALIASES",
    "ContextRules",
    "DEFAULT_POLICY",
    "FAILURE_KINDS",
    "Fallbacks",
    "POLICIES_DIR_ENV",
    "Policy",
    "PolicyError",
    "PolicySet",
    "PolicyWatcher",
    "Problem",
    "ReloadResult",
    "builtin_policies",
    "check_policy_file",
    "check_policy_text",
    "load_policies",
    "load_policy_file",
    "missing_policies",
    "policies_for_settings",
    "policy_files",
]
