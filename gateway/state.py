"""The `Gateway`: everything one running gateway holds, built once and passed in."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.auth.principal import Authenticator
from gateway.budget.accounting import Accounting
from gateway.catalog import Catalog, ConfigError, ModelConfig, Provider, reload_catalog
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.policy import DEFAULT_POLICY, Policy, PolicyError, PolicySet, PolicyWatcher, ReloadResult, builtin_policies
from gateway.providers import Adapter, build_adapter
from gateway.routing.circuits import CLOSED, CircuitBreakers
from gateway.settings import Settings
from gateway.store import Store, open_store
from gateway.tokens import TokenCounter

log = logging.getLogger("gateway")

# A replaced adapter is closed this long after its provider's total timeout: enough for a request that took
# it just before the swap to finish its call (the timeout bounds the call, streaming included).
RETIRE_GRACE_SECONDS = 5.0

AdapterFactory = Callable[[Provider], Adapter]


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


class Gateway:
    def __init__(
        self, settings: Settings, catalog: Catalog, store: Store | None = None, adapters: AdapterFactory | None = None
    ) -> None:
        self.settings = settings
        # How a provider's adapter is built: by its kind, or (tests) a fake that answers in-process, as httpx's
        # MockTransport does for a client.
        self._build_adapter = adapters if adapters is not None else self._adapter_by_kind
        self.catalog = catalog  # replaced as a whole by a reload (with `adapters`), never changed in place
        self.store = (
            store
            if store is not None
            else open_store(settings.resolved_database_url(), wal_limit_bytes=settings.sqlite_wal_limit_bytes)
        )
        self.auth = Authenticator(settings.master_key, self.store)
        self.metrics = Metrics(catalog, __version__)
        self.accounting = Accounting(
            self.store, settings, on_soft_limit=self.metrics.soft_limit_crossed, on_storage=self.metrics.storage_event
        )
        self.circuits = CircuitBreakers(
            settings.circuit_failures, settings.circuit_cooldown_seconds, on_change=self.metrics.circuit_changed
        )
        self.tokens = TokenCounter()  # error statistics of our prompt counts against what providers report
        self.adapters: dict[str, Adapter] = {name: self._adapter(p) for name, p in catalog.providers.items()}
        self.policies = self._load_policies()
        # Reloads of the catalog and the policies together (gateway_config_reloads_total{result}).
        self.config_reloads = {"success": 0, "failure": 0}
        self.catalog_version = 1
        self.catalog_loaded_at = time.time()
        self.catalog_error: str | None = None  # why the last catalog reload was rejected (None: it was not)
        self._catalog_seen = self._catalog_fingerprint()
        self._retiring: list[_Retiring] = []
        self._closing_adapters: set[Adapter] = set()
        self.retire_grace_seconds = RETIRE_GRACE_SECONDS
        self._reload_lock = asyncio.Lock()
        self._closing = False
        self._watch: asyncio.Task[None] | None = None
        self._builtin_policies = builtin_policies()
        self._unknown_policies: set[str] = set()
        self.started = False
        self.draining = False  # SIGTERM: shutting down, not ready
        self._drain_over: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.store.open()
        await self._report_unknown_team_policies()
        await self.accounting.start(list(self.catalog.models))
        for name, adapter in self.adapters.items():
            self._warn_unconfigured(self.catalog.providers[name])
            await adapter.start()
        if self.reloadable:
            self._watch = asyncio.get_running_loop().create_task(self._watch_files())
            self._on_sighup(lambda: self.in_background(self.reload()))
        self.started = True

    @staticmethod
    def _warn_unconfigured(provider: Provider) -> None:
        if provider.api_key is None and provider.kind != "litellm":
            log.warning("provider %s has no API key (%s): its models will answer 503", provider.name, provider.kind)

    # -- reloading the catalog and the policies ---------------------------------------------------

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
        for team in await self.store.list_teams():
            teams.setdefault(team.policy or DEFAULT_POLICY, []).append(team.name)
        return teams

    async def _report_unknown_team_policies(self) -> None:
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
        fresh = {name: self._adapter(p) for name, p in new.providers.items() if current.providers.get(name) != p}
        try:
            for name, adapter in fresh.items():
                self._warn_unconfigured(new.providers[name])
                await adapter.start()
            await self._seed_estimates([name for name in new.models if name not in current.models])
        except BaseException:
            await self._close_all(fresh.values())
            raise
        policies = None
        if self.policies is not None:
            in_use = await self._policies_in_use()
            if isinstance(in_use, ConfigReload):
                await self._close_all(fresh.values())
                self.catalog_error = in_use.error
                return in_use
            # Swaps the policies in only if they validate against `new` and still define every team's policy.
            policies = self.policies.reload(catalog=new, in_use=in_use)
            if not policies.ok:
                await self._close_all(fresh.values())
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
        self.metrics.set_catalog(new)
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
            self._retiring.append(retiring)
            retiring.task = self.in_background(self._close_later(retiring))

    def _reset_circuits(self, old: Catalog, new: Catalog) -> None:
        """Forget the circuits of deployments that are gone or whose provider changed (another URL, key...):
        their failures were the old upstream's. Shown closed under the old catalog's labels, before the swap."""
        for name in list(self.circuits.circuits):
            provider, _, model = name.partition("/")
            kept = new.models.get(model)
            if kept is None or kept.provider != provider or new.providers.get(provider) != old.providers.get(provider):
                circuit = self.circuits.circuits.pop(name)
                if circuit.state != CLOSED:
                    self.metrics.circuit_changed(name, CLOSED)

    async def _seed_estimates(self, models: list[str]) -> None:
        """Expected-output statistics for models new to this catalog, from their recent ledger rows."""
        for model in models:
            try:
                tokens = await self.store.recent_completion_tokens(model, 256)
            except Exception:  # the estimator works without history (the configured default)
                log.exception("reading recent answers of %s failed", model)
                continue
            self.accounting.estimator.seed(model, tokens)

    async def _close_later(self, retiring: _Retiring) -> None:
        """Close each replaced adapter once the calls that may still use it are over: its provider's total
        timeout plus a grace. Cancelled by `close()`, which closes them at once."""
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
            await self._close_all([adapter])
            self._closing_adapters.discard(adapter)
        self._retiring.remove(retiring)

    @staticmethod
    async def _close_all(adapters: Any) -> None:
        for adapter in adapters:
            try:
                await adapter.close()
            except Exception:
                log.exception("closing the adapter of %s failed", adapter.name)

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
        self.metrics.config_reloaded(ok)
        if ok:  # an operator acted (topped up a provider account, say): circuits held for an account are released
            released = self.circuits.release_holds()
            if released:
                log.warning("reload: released the circuits held for an exhausted account: %s", ", ".join(released))

    async def _watch_files(self) -> None:
        """Reload when the catalog file or a policy file changed (checked every `reload_poll_seconds`)."""
        while True:
            await asyncio.sleep(self.settings.reload_poll_seconds)  # periodic check for edits, not synchronisation
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

    async def close(self) -> None:
        self.started = False
        async with self._reload_lock:  # a reload under way finishes first; none starts after this
            self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for retiring in self._retiring:  # replaced adapters are closed below, now, not after their timeout
            if retiring.task is not None:
                retiring.task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.accounting.close()
        leftovers = [a for retiring in self._retiring for a in retiring.adapters.values()] + list(
            self._closing_adapters
        )
        self._retiring.clear()
        self._closing_adapters.clear()
        await self._close_all([*self.adapters.values(), *leftovers])
        await self.store.close()

    def _adapter(self, provider: Provider) -> Adapter:
        return self._build_adapter(provider)

    def _adapter_by_kind(self, provider: Provider) -> Adapter:
        return build_adapter(provider, max_sse_event_bytes=self.settings.max_sse_event_bytes)

    def begin_drain(self) -> None:
        """Shutdown began (SIGTERM): /readyz says not ready from now on, and when the drain time is over the
        requests still running are ended (`drain_over`). Called again, it does nothing."""
        if self.draining:
            return
        self.draining = True
        seconds = self.settings.shutdown_drain_seconds
        log.warning("shutting down: not ready; requests in flight have %.0f s to finish", seconds)
        asyncio.get_running_loop().call_later(seconds, self.drain_over.set)

    @property
    def drain_over(self) -> asyncio.Event:
        """Set when the drain time after SIGTERM is over: open streams and waiting requests end then."""
        if self._drain_over is None:
            self._drain_over = asyncio.Event()
        return self._drain_over

    def in_background(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _load_policies(self) -> PolicyWatcher | None:
        """The policy directory, validated against this catalog. An explicitly configured directory
        (GATEWAY_POLICIES_DIR) that does not validate stops start-up (PolicyError); the default one falls back
        to the built-in permissive policy (`Policy(name="default")`) with a warning, so a custom catalog
        without the shipped policies' models still starts."""
        directory = self.settings.resolved_policies_dir()
        try:
            return PolicyWatcher(directory, self.catalog)
        except PolicyError as exc:
            if self.settings.policies_dir is not None:
                raise
            log.warning(
                "policies in %s do not fit this catalog; using the built-in default policy:\n%s", directory, exc
            )
            return None

    def policy_set(self) -> PolicySet:
        """The policies in use; a request takes this once and keeps it to the end."""
        if self.policies is None:
            return self._builtin_policies
        return self.policies.current

    def policy_for(self, policies: PolicySet, name: str | None) -> Policy:
        """A team's policy. A name that does not exist fails closed: 503 `policy_not_found`, never the default
        policy, which may allow what the team's own policy forbids (a team meant to be `eu-only` must not reach
        a model in another region because its policy name has a typo). The admin API and CLI refuse unknown
        names and a reload may not remove a policy in use, so this is a team row written by an older version
        or by a node with other policies; it is logged (error) once per name."""
        wanted = name or DEFAULT_POLICY
        policy = policies.get(wanted)
        if policy is not None:
            return policy
        if wanted not in self._unknown_policies:
            self._unknown_policies.add(wanted)
            log.error(
                "a team uses the policy %r, which is not defined (known: %s): its requests are refused with 503 "
                "policy_not_found until its policy is changed (`gateway teams update NAME --policy ...`)",
                wanted,
                ", ".join(sorted(policies)),
            )
        raise GatewayError(
            503,
            f"This team's routing policy {wanted!r} is not defined on this gateway, so its requests are refused "
            "(never routed with another policy); an administrator must set the team's policy to a defined one.",
            "server_error",
            "policy_not_found",
        )

    def adapter_for(self, model: ModelConfig) -> Adapter:
        """The adapter serving `model` as the catalog it came from configured it: a request that planned just
        before a reload still gets the adapter it planned with (kept open until its calls can have ended)."""
        catalog, adapters = self.catalog, self.adapters
        if catalog.models.get(model.name) is not model:  # planned with an earlier catalog
            for retiring in reversed(self._retiring):
                if model.provider in retiring.adapters and retiring.catalog.models.get(model.name) is model:
                    catalog, adapters = retiring.catalog, retiring.adapters
                    break
        provider, adapter = catalog.providers.get(model.provider), adapters.get(model.provider)
        if provider is None or adapter is None:
            raise GatewayError(
                503,
                f"provider {model.provider!r} of model {model.name!r} was removed by a configuration reload",
                "upstream_error",
                "provider_removed",
            )
        if provider.api_key is None and provider.kind in ("mistral", "moonshot"):
            raise GatewayError(
                503,
                f"provider {provider.name!r} has no API key configured; model {model.name!r} is unavailable",
                "upstream_error",
                "provider_not_configured",
            )
        return adapter
