"""Routing policies: declarative YAML files (`policies/NAME.yaml`), their schema, loading, validation and reload.

A team names its policy (`default` unless it names another). A policy says which
models the team may use, in which regions, in what order of preference, what to
do when a prompt does not fit a model's window or the budget runs low, what to
do with a request that names a model the policy forbids, and when to retry and
fall back. `policies/README.md` documents every field.

This module only describes and checks policies; the routing pipeline applies
them. What it gives the pipeline is pure: `Policy.candidates`, `Policy.fits`,
`Policy.cheapest`, `Policy.downgrades` read nothing but their arguments.
`PolicyWatcher` keeps the last good `PolicySet` and swaps in a new one only
when the whole directory validates, so a broken edit never replaces a working
version (in-flight requests keep the `Policy` object they started with).

Problems name the file and the field path, as `gateway.config` does for the
catalog: `policies/x.yaml: prefer[1]: unknown model 'gpt-5' (known: ...) (line 7)`.

Modules: `schema` (the pydantic models), `checks` (loading one file and validating it: `Problem`,
`PolicyError`, `check_policy_text`, ...), `watcher` (`PolicySet`, `load_policies`, `PolicyWatcher`) and
`cli` (`gateway policy check|show`). This package re-exports every name the former single module
`gateway/policy.py` had, so `from gateway.policy import X` keeps working.
"""

from __future__ import annotations

# Names the former module imported; still importable from here.
import argparse
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Iterable, Iterator, Literal, Sequence, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
)

from gateway.config import Capability, Catalog, ConfigError, ModelConfig, _loc
from gateway.management import POLICY_PATTERN

# The policy API, from its modules.
from gateway.policy.schema import (
    CAPABILITIES,
    DEFAULT_POLICY,
    FAILURE_KINDS,
    POLICIES_DIR_ENV,
    BudgetRules,
    ContextRules,
    Downgrade,
    FailureKind,
    Fallbacks,
    Millis,
    NamedModel,
    Number,
    Percent,
    Policy,
    _failure_kind,
    _known_failure,
    _number,
    _Strict,
)
from gateway.policy.checks import (
    PolicyError,
    Problem,
    _by_line,
    _could_be_cheaper,
    _fields_at,
    _line_of,
    _Loader,
    _schema_problems,
    _semantic_problems,
    _stem,
    check_policy_file,
    check_policy_text,
    load_policy_file,
    log,
    policy_files,
)
from gateway.policy.watcher import PolicySet, PolicyWatcher, ReloadResult, load_policies
from gateway.policy.cli import (
    _catalog_for,
    _summary,
    add_policy_commands,
    cmd_policy_check,
    cmd_policy_show,
    default_policies_dir,
)
