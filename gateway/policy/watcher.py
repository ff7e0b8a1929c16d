"""Policy sets and reloading: `load_policies` reads a directory into a `PolicySet`; `PolicyWatcher` reloads it.

`PolicyWatcher` keeps the last good `PolicySet` and swaps in a new one only
when the whole directory validates, so a broken edit never replaces a working
version (in-flight requests keep the `Policy` object they started with).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog import Catalog
from gateway.policy.checks import PolicyError, Problem, check_policy_text, policy_files, policy_name
from gateway.policy.schema import CLAUDE_CODE_ALIASES, DEFAULT_POLICY, Policy
from gateway.settings import Settings

log = logging.getLogger("gateway.policy")


class PolicySet(Mapping[str, Policy]):
    """The valid policies of one directory, by name, and every problem found while loading it."""

    def __init__(
        self, directory: str, policies: Mapping[str, Policy], problems: Sequence[Problem] = (), digest: str = ""
    ) -> None:
        self.directory = directory
        self._policies = dict(policies)
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.digest = digest

    def __getitem__(self, name: str) -> Policy:
        return self._policies[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __repr__(self) -> str:
        return f"PolicySet({self.directory!r}, {sorted(self._policies)}, {len(self.errors)} errors, {len(self.warnings)} warnings)"


def load_policies(directory: Path, catalog: Catalog) -> PolicySet:
    """Every `*.yaml` file of `directory` (name = file stem). Files with errors are left out of the mapping and
    their problems listed; the directory must hold `default.yaml` (teams use it unless they name another)."""
    directory = Path(directory)
    source = str(directory)
    if not directory.is_dir():
        return PolicySet(source, {}, [Problem(source, "(directory)", "not a directory")])
    policies: dict[str, Policy] = {}
    problems: list[Problem] = []
    digest = hashlib.sha256()
    for path in policy_files(directory):
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), "(top level)", f"cannot read file: {exc}"))
            continue
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        policy, found = check_policy_text(text, str(path), policy_name(path), catalog)
        problems.extend(found)
        if policy is not None:
            policies[policy.name] = policy
    for stray in sorted(directory.glob("*.yml")):
        problems.append(Problem(str(stray), "(file name)", "ignored: policy files end in .yaml", warning=True))
    if not (directory / f"{DEFAULT_POLICY}.yaml").is_file():
        problems.append(
            Problem(
                source,
                "(directory)",
                f"no {DEFAULT_POLICY}.yaml: teams use the policy '{DEFAULT_POLICY}' unless they name another",
            )
        )
    return PolicySet(source, policies, problems, digest.hexdigest()[:12])


def builtin_policies() -> PolicySet:
    """What a gateway without a usable default policy directory routes with: the permissive `default` only,
    with the shipped policies' aliases for Claude Code's model ids."""
    return PolicySet("(built-in)", {DEFAULT_POLICY: Policy(name=DEFAULT_POLICY, aliases=CLAUDE_CODE_ALIASES)})


def policies_for_settings(settings: Settings, catalog: Catalog) -> PolicySet:
    """The policies a gateway with `settings` would start with, as `Gateway` loads them: the directory if it
    validates; the built-in `default` if the default directory does not; an explicitly configured directory
    (GATEWAY_POLICIES_DIR) that does not validate raises PolicyError (it stops the gateway's start-up too).
    The admin CLI checks team policy names against this."""
    directory = settings.resolved_policies_dir()
    loaded = load_policies(directory, catalog)
    if loaded.ok:
        return loaded
    if settings.policies_dir is not None:
        raise PolicyError(str(directory), loaded.errors)
    return builtin_policies()


def missing_policies(policies: Mapping[str, Policy], wanted: Mapping[str, Sequence[str]], source: str) -> list[Problem]:
    """A problem for each policy name teams use (`wanted`: policy name -> teams) that `policies` lacks: a
    reload that removes or renames a policy in use is refused, as any other broken edit."""
    known = ", ".join(sorted(policies)) or "none"
    return [
        Problem(
            source,
            "(teams)",
            f"policy {name!r} is used by team(s) {', '.join(sorted(teams))} but is not defined (known: {known}); "
            "move those teams to another policy first",
        )
        for name, teams in sorted(wanted.items())
        if name not in policies
    ]


# -- reloading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool  # the new version is in use (or nothing changed)
    changed: bool  # a new version was swapped in
    version: int  # the version in use after this attempt (0: none yet)
    problems: tuple[Problem, ...] = ()

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass
class PolicyWatcher:
    """Holds the policies in use, and replaces them only with a directory that validates completely.

    Call `reload()` on SIGHUP and `poll()` every few seconds (it reloads when a file changed); both are
    cheap when nothing changed. A failed reload keeps the previous version, logs why, sets `last_error`
    and counts `failures` (for a metric); `on_reload` is called with every result. Requests should take
    `watcher.current` once and keep that `PolicySet` to the end.
    """

    directory: Path
    catalog: Catalog
    strict: bool = True  # the first load must succeed (raise PolicyError), as a bad catalog stops start-up
    on_reload: Callable[[ReloadResult], None] | None = None
    clock: Callable[[], float] = time.time
    version: int = field(default=0, init=False)
    loaded_at: float | None = field(default=None, init=False)
    checked_at: float | None = field(default=None, init=False)
    last_error: str | None = field(default=None, init=False)
    failures: int = field(default=0, init=False)
    _current: PolicySet | None = field(default=None, init=False, repr=False)
    _seen: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        result = self.reload()
        if self.strict and not result.ok:
            raise PolicyError(str(self.directory), [p for p in result.problems if not p.warning])

    @property
    def current(self) -> PolicySet:
        """The policies in use (an empty set if none ever loaded)."""
        return self._current if self._current is not None else PolicySet(str(self.directory), {})

    def get(self, name: str) -> Policy | None:
        return self.current.get(name)

    def fingerprint(self) -> tuple[Any, ...]:
        """Names, sizes and modification times of the policy files: changes when a file is edited, added or removed."""
        try:
            stats = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in policy_files(self.directory)]
        except OSError:
            stats = [("?", time.monotonic_ns(), 0)]  # a file vanished while listing: look again next time
        return tuple(stats)

    def changed(self) -> bool:
        """Whether the files changed since the last attempt (good or bad)."""
        return self.fingerprint() != self._seen

    def poll(self, in_use: Mapping[str, Sequence[str]] | None = None) -> ReloadResult | None:
        """Reload if the files changed since the last attempt (good or bad); None if nothing changed."""
        if not self.changed():
            return None
        return self.reload(in_use=in_use)

    def reload(self, catalog: Catalog | None = None, in_use: Mapping[str, Sequence[str]] | None = None) -> ReloadResult:
        """Load the directory again (against `catalog`, if a new one is given); swap it in only if it has no errors.
        `in_use` (policy name -> the teams that use it): each of those names must still be defined."""
        with self._lock:
            self._seen = self.fingerprint()
            use = catalog if catalog is not None else self.catalog
            loaded = load_policies(self.directory, use)
            if in_use:
                missing = missing_policies(loaded, in_use, str(self.directory))
                if missing:
                    loaded = PolicySet(loaded.directory, loaded, [*loaded.problems, *missing], loaded.digest)
            self.checked_at = self.clock()
            if not loaded.ok:
                self.failures += 1
                self.last_error = "\n".join(str(p) for p in loaded.errors)
                kept = f"keeping version {self.version}" if self._current is not None else "no policies loaded"
                log.error("policies in %s not reloaded (%s):\n%s", self.directory, kept, self.last_error)
                result = ReloadResult(False, False, self.version, loaded.problems)
            else:
                changed = (
                    self._current is None
                    or loaded.digest != self._current.digest
                    or (catalog is not None and catalog is not self.catalog)
                )
                if changed:
                    self._current = loaded
                    self.catalog = use
                    self.version += 1
                    self.loaded_at = self.checked_at
                    log.info(
                        "policies version %d loaded from %s (%s; sha256 %s)",
                        self.version,
                        self.directory,
                        ", ".join(sorted(loaded)),
                        loaded.digest,
                    )
                    for problem in loaded.warnings:
                        log.warning("%s", problem)
                self.last_error = None
                result = ReloadResult(True, changed, self.version, loaded.problems)
        if self.on_reload is not None:
            self.on_reload(result)
        return result
