"""The configuration in use (catalog, provider adapters, policies) and its replacement by a reload.

A reload (SIGHUP, `POST /admin/reload`, an edited file) prepares everything first (reads and validates the
catalog and the policies, starts the new adapters) and then swaps without awaiting, so a request sees either
the old configuration or the new one, never a mix. A rejected catalog changes nothing. Adapters a reload
replaced stay open for the requests that planned with them until their provider's timeout plus a grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog import Catalog, ConfigError, ModelConfig, Provider, reload_catalog
from gateway.metrics import Metrics
from gateway.policy import DEFAULT_POLICY, PolicySet, PolicyWatcher, ReloadResult, builtin_policies
from gateway.providers import Adapter
from gateway.routing.circuits import CLOSED, CircuitBreakers
from gateway.store import Store

log = logging.getLogger("gateway")

# A replaced adapter is closed this long after its provider's total timeout: enough for a request that took
# it just before the swap to finish its call (the timeout bounds the call, streaming included).
RETIRE_GRACE_SECONDS = 5.0

AdapterFactory = Callable[[Provider], Adapter]
InBackground = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


@dataclass(frozen=True, slots=True)
class ConfigReload:
    """The outcome of one reload (SIGHUP, `POST /admin/reload`, an edited file). A rejected catalog (it does
    not load, or the policies do not validate against it) changes nothing: catalog and policies stay."""

    ok: bool
    catalog_changed: bool = False  # a new catalog is in use
    policies: ReloadResult | None = None  # None: no policy directory, or not reached (catalog rejected first)
    error: str | None = None  # why it was rejected (one line)
    problems: tuple[str, ...] = ()  # each problem, naming file and field
    attempted: bool = True  # False: nothing to reload (built-in catalog and policy), or shutting down

    @property
    def changed(self) -> bool:
        return self.catalog_changed or (self.policies is not None and self.policies.changed)


@dataclass(eq=False)
class _Retiring:
    """Adapters replaced or removed by a reload, still open for requests that planned with `catalog`."""

    catalog: Catalog
    adapters: dict[str, Adapter]
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def warn_unconfigured(provider: Provider) -> None:
    if provider.api_key is None and provider.kind != "litellm":
        log.warning("provider %s has no API key (%s): its models will answer 503", provider.name, provider.kind)


async def close_adapters(adapters: Iterable[Adapter]) -> None:
    """Close each adapter; one that fails to close is logged and the others are still closed."""
    for adapter in adapters:
        try:
            await adapter.close()
        except Exception:
            log.exception("closing the adapter of %s failed", adapter.name)


class Reloader:
    """Holds the catalog, the adapters built for its providers and the policies in use, and replaces them
    (as a whole, never in place) when a reload succeeds.

    What it needs is passed in: `build_adapter` for a new or changed provider, `store` for which policies
    the teams use, `metrics` and
    `circuits` to update at a swap, `poll_seconds` between checks of the files, and `in_background` to run
    the SIGHUP reloads and the closing of retired adapters (the gateway waits for those when it closes)."""

    def __init__(
        self,
        catalog: Catalog,
        adapters: dict[str, Adapter],
        policies: PolicyWatcher | None,
        *,
        build_adapter: AdapterFactory,
        store: Store,
        metrics: Metrics,
        circuits: CircuitBreakers,
        poll_seconds: float,
        in_background: InBackground,
    ) -> None:
        self.catalog = catalog  # replaced as a whole by a reload (with `adapters`), never changed in place
        self.adapters = adapters
        self.policies = policies  # None: the built-in default policy (no policy directory)
        self._build_adapter = build_adapter
        self._store = store
        self._metrics = metrics
        self._circuits = circuits
        self._poll_seconds = poll_seconds
        self._in_background = in_background
        self._builtin_policies = builtin_policies()
        # Reloads of the catalog and the policies together (gateway_config_reloads_total{result}).
        self.config_reloads = {"success": 0, "failure": 0}
        self.catalog_version = 1
        self.catalog_loaded_at = time.time()
        self.catalog_error: str | None = None  # why the last catalog reload was rejected (None: it was not)
        self._catalog_seen = self._catalog_fingerprint()
        self.retiring: list[_Retiring] = []  # oldest first
        self._closing_adapters: set[Adapter] = set()
        self.retire_grace_seconds = RETIRE_GRACE_SECONDS
        self._reload_lock = asyncio.Lock()
        self._closing = False
        self._watch: asyncio.Task[None] | None = None

    # -- what requests use --------------------------------------------------------------------------

    def policy_set(self) -> PolicySet:
        """The policies in use; a request takes this once and keeps it to the end."""
        if self.policies is None:
            return self._builtin_policies
        return self.policies.current

    def serving(self, model: ModelConfig) -> tuple[Provider | None, Adapter | None]:
        """The provider and adapter serving `model` as the catalog it came from configured them: a request
        that planned just before a reload still gets the adapter it planned with (kept open until its calls
        can have ended). (None, ...) or (..., None): the provider was removed."""
        catalog, adapters = self.catalog, self.adapters
        if catalog.models.get(model.name) is not model:  # planned with an earlier catalog
            for retiring in reversed(self.retiring):
                if model.provider in retiring.adapters and retiring.catalog.models.get(model.name) is model:
                    catalog, adapters = retiring.catalog, retiring.adapters
                    break
        return catalog.providers.get(model.provider), adapters.get(model.provider)

    @property
    def reloadable(self) -> bool:
        """Whether anything can be reloaded: a catalog file, or a policy directory."""
        return self.catalog.path is not None or self.policies is not None

    def policy_status(self) -> dict[str, object]:
        if self.policies is None:
            return {"source": "built-in default", "version": 0, "last_error": None, "reloads": self.config_reloads}
        return {
            "source": str(self.policies.directory),
            "version": self.policies.version,
            "names": sorted(self.policies.current),
            "last_error": self.policies.last_error or None,
            "reloads": self.config_reloads,
        }

    def catalog_status(self) -> dict[str, object]:
        """The catalog in use, for /readyz and `POST /admin/reload`."""
        return {
            "source": self.catalog.source,
            "reloadable": self.catalog.path is not None,
            "version": self.catalog_version,
            "loaded_at": self.catalog_loaded_at,
            "last_error": self.catalog_error,
            "reloads": self.config_reloads,
        }

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the adapters, then (if anything is reloadable) the file polling and the SIGHUP handler."""
        for name, adapter in self.adapters.items():
            warn_unconfigured(self.catalog.providers[name])
            await adapter.start()
        if self.reloadable:
            self._watch = asyncio.get_running_loop().create_task(self._watch_files())
            self._on_sighup(lambda: self._in_background(self.reload()))

    async def stop(self) -> None:
        """No reload starts from now on (one under way finishes first); the polling ends, and the retired
        adapters' timers are cancelled (`close()` closes those adapters at once)."""
        async with self._reload_lock:
            self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for retiring in self.retiring:
            if retiring.task is not None:
                retiring.task.cancel()

    async def close(self) -> None:
        """Close the adapters in use and those still retiring (after `stop()`; each adapter once)."""
        leftovers = [a for retiring in self.retiring for a in retiring.adapters.values()] + list(self._closing_adapters)
        self.retiring.clear()
        self._closing_adapters.clear()
        await close_adapters([*self.adapters.values(), *leftovers])

    # -- reloading ----------------------------------------------------------------------------------

    async def reload(self) -> ConfigReload:
        """Read the catalog file (if there is one) and the policy directory again, now (SIGHUP,
        `POST /admin/reload`, an edited file). A catalog that does not load, or against which the policies do
        not validate, is rejected as a whole: the previous catalog and policies stay in use, and the reason is
        logged and shown in /readyz. In-flight requests finish with the catalog, adapters and policy they took."""
        async with self._reload_lock:
            if self._closing:
                return ConfigReload(False, error="the gateway is shutting down", attempted=False)
            if self.catalog.path is None:
                if self.policies is None:
                    return ConfigReload(
                        False, error="nothing to reload: built-in catalog and built-in default policy", attempted=False
                    )
                result = await self._reload_policies_only()
            else:
                result = await self._reload_catalog()
            self._count_reload(result.ok)
            return result

    async def _teams_by_policy(self) -> dict[str, list[str]]:
        """Which teams use which policy (policy name -> team names), from the store: a reload must keep each."""
        teams: dict[str, list[str]] = {}
        for team in await self._store.list_teams():
            teams.setdefault(team.policy or DEFAULT_POLICY, []).append(team.name)
        return teams

    async def report_unknown_team_policies(self) -> None:
        """At start-up, name the teams whose policy is not defined here (their requests are refused)."""
        try:
            teams = await self._teams_by_policy()
        except Exception:  # the store answers later or not at all: requests will say so
            log.exception("reading the teams' policies failed")
            return
        known = self.policy_set()
        for name, members in sorted(teams.items()):
            if name not in known:
                log.error(
                    "team(s) %s use the policy %r, which is not defined (known: %s): their requests are refused with "
                    "503 policy_not_found",
                    ", ".join(sorted(members)),
                    name,
                    ", ".join(sorted(known)),
                )

    async def _policies_in_use(self) -> dict[str, list[str]] | ConfigReload:
        """`_teams_by_policy()`, or the rejected reload to return when the teams cannot be read (then nothing is
        swapped in: a policy some team still uses could otherwise disappear)."""
        try:
            return await self._teams_by_policy()
        except Exception as exc:  # the database is unreachable: keep what is in use, try again later
            error = f"policies not reloaded: cannot read which policies the teams use ({type(exc).__name__}: {exc})"
            log.error("%s", error)
            if self.policies is not None:
                self.policies.last_error = error
            return ConfigReload(False, error=error, problems=(error,))

    async def _reload_policies_only(self) -> ConfigReload:
        assert self.policies is not None
        in_use = await self._policies_in_use()
        if isinstance(in_use, ConfigReload):
            return in_use
        policies = self.policies.reload(in_use=in_use)
        problems = tuple(str(p) for p in policies.problems)
        error = None if policies.ok else f"policies in {self.policies.directory} not reloaded"
        return ConfigReload(policies.ok, False, policies, error, problems)

    async def _reload_catalog(self) -> ConfigReload:
        current = self.catalog
        self._catalog_seen = self._catalog_fingerprint()  # before reading: an edit made while reading shows later
        try:
            new = reload_catalog(current)
        except ConfigError as exc:
            problems = tuple(f"{exc.source}: {problem}" for problem in exc.problems)
            return self._reject(
                f"catalog {exc.source} not reloaded (keeping version {self.catalog_version}): it does not load",
                problems,
            )
        if new.same_as(current):  # unchanged: only the policies may have been edited
            self.catalog_error = None
            if self.policies is None:
                return ConfigReload(True)
            return await self._reload_policies_only()
        # Adapters for providers that are new or whose configuration changed, started before the swap.
        fresh = {name: self._build_adapter(p) for name, p in new.providers.items() if current.providers.get(name) != p}
        try:
            for name, adapter in fresh.items():
                warn_unconfigured(new.providers[name])
                await adapter.start()
        except BaseException:
            await close_adapters(fresh.values())
            raise
        policies = None
        if self.policies is not None:
            in_use = await self._policies_in_use()
            if isinstance(in_use, ConfigReload):
                await close_adapters(fresh.values())
                self.catalog_error = in_use.error
                return in_use
            # Swaps the policies in only if they validate against `new` and still define every team's policy.
            policies = self.policies.reload(catalog=new, in_use=in_use)
            if not policies.ok:
                await close_adapters(fresh.values())
                return self._reject(
                    f"catalog {new.source} not reloaded (keeping version {self.catalog_version}): the policies in "
                    f"{self.policies.directory} do not validate against it",
                    tuple(str(p) for p in policies.problems if not p.warning),
                    policies,
                )
        self._swap(new, fresh)
        return ConfigReload(True, True, policies, None, tuple(str(p) for p in policies.problems) if policies else ())

    def _reject(self, error: str, problems: tuple[str, ...], policies: ReloadResult | None = None) -> ConfigReload:
        self.catalog_error = error + (":\n" + "\n".join(problems) if problems else "")
        log.error("%s", self.catalog_error)
        return ConfigReload(False, False, policies, error, problems)

    def _swap(self, new: Catalog, fresh: dict[str, Adapter]) -> None:
        """Put `new` and its adapters in use at once (no await here), and retire the adapters it replaced."""
        old, old_adapters = self.catalog, self.adapters
        self._reset_circuits(old, new)
        self.catalog = new
        self.adapters = {name: fresh.get(name) or old_adapters[name] for name in new.providers}
        self._metrics.set_catalog(new)
        self.catalog_version += 1
        self.catalog_loaded_at = time.time()
        self.catalog_error = None
        replaced = {name: a for name, a in old_adapters.items() if name in fresh or name not in new.providers}
        added = [m for m in new.models if m not in old.models]
        removed = [m for m in old.models if m not in new.models]
        log.info(
            "catalog version %d loaded from %s: %d providers, %d models%s%s%s",
            self.catalog_version,
            new.source,
            len(new.providers),
            len(new.models),
            f"; added {', '.join(added)}" if added else "",
            f"; removed {', '.join(removed)}" if removed else "",
            f"; new adapters for {', '.join(sorted(fresh))}" if fresh else "",
        )
        if replaced:
            retiring = _Retiring(old, replaced)
            self.retiring.append(retiring)
            retiring.task = self._in_background(self._close_later(retiring))

    def _reset_circuits(self, old: Catalog, new: Catalog) -> None:
        """Forget the circuits of deployments that are gone or whose provider changed (another URL, key...):
        their failures were the old upstream's. Shown closed under the old catalog's labels, before the swap."""
        for name in list(self._circuits.circuits):
            provider, _, model = name.partition("/")
            kept = new.models.get(model)
            if kept is None or kept.provider != provider or new.providers.get(provider) != old.providers.get(provider):
                circuit = self._circuits.circuits.pop(name)
                if circuit.state != CLOSED:
                    self._metrics.circuit_changed(name, CLOSED)

    async def _close_later(self, retiring: _Retiring) -> None:
        """Close each replaced adapter once the calls that may still use it are over: its provider's total
        timeout plus a grace. Cancelled by `stop()`; `close()` then closes them at once."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadlines = sorted(
            (retiring.catalog.providers[name].timeouts.total + self.retire_grace_seconds, name)
            for name in retiring.adapters
        )
        for delay, name in deadlines:
            await asyncio.sleep(max(0.0, start + delay - loop.time()))  # a deadline, not synchronisation
            adapter = retiring.adapters.pop(name)  # no request is handed it from now on
            self._closing_adapters.add(adapter)  # (close() finishes the job if it cancels this one)
            await close_adapters([adapter])
            self._closing_adapters.discard(adapter)
        self.retiring.remove(retiring)

    def _catalog_fingerprint(self) -> tuple[Any, ...] | None:
        path = self.catalog.path
        if path is None:
            return None
        try:
            stat = Path(path).stat()
        except OSError as exc:
            return ("missing", type(exc).__name__)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _count_reload(self, ok: bool) -> None:
        self.config_reloads["success" if ok else "failure"] += 1
        self._metrics.config_reloaded(ok)
        if ok:  # an operator acted (topped up a provider account, say): circuits held for an account are released
            released = self._circuits.release_holds()
            if released:
                log.warning("reload: released the circuits held for an exhausted account: %s", ", ".join(released))

    async def _watch_files(self) -> None:
        """Reload when the catalog file or a policy file changed (checked every `poll_seconds`)."""
        while True:
            await asyncio.sleep(self._poll_seconds)  # periodic check for edits, not synchronisation
            try:
                if self.catalog.path is not None and self._catalog_fingerprint() != self._catalog_seen:
                    await self.reload()
                elif self.policies is not None and self.policies.changed():
                    async with self._reload_lock:
                        if self._closing:
                            continue
                        in_use = await self._policies_in_use()
                        ok = in_use.ok if isinstance(in_use, ConfigReload) else self.policies.reload(in_use=in_use).ok
                        self._count_reload(ok)
            except Exception:  # a vanished directory or a race with an editor: try again next round
                log.exception("checking the configuration files failed")

    @staticmethod
    def _on_sighup(callback: Callable[[], object]) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests run gateways on threads) or no SIGHUP on this platform
