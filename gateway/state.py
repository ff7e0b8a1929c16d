"""The `Gateway`: everything one running gateway holds, built once and passed in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import __version__
from gateway.auth.principal import Authenticator
from gateway.budget.accounting import Accounting
from gateway.catalog import Catalog, ModelConfig, Provider
from gateway.errors import GatewayError
from gateway.limits.leases import Leases
from gateway.limits.provider_queue import ProviderQueues
from gateway.limits.stores import open_limit_store
from gateway.metrics import Metrics
from gateway.policy import DEFAULT_POLICY, Policy, PolicyError, PolicySet, PolicyWatcher
from gateway.providers import Adapter, build_adapter
from gateway.reload import AdapterFactory, ConfigReload, Reloader, _Retiring
from gateway.routing.circuits import CircuitBreakers
from gateway.settings import Settings
from gateway.store import Store, open_store
from gateway.tokens import TokenCounter

log = logging.getLogger("gateway")


class Drain(asyncio.Event):
    """An event that also runs the callbacks subscribed to it when it is set: every request in flight watches
    the end of the drain time this way, without a task of its own waiting on the event."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: set[Callable[[], None]] = set()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` (soon) when the event is set, or now if it is set already."""
        if self.is_set():
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._callbacks.add(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.discard(callback)

    def set(self) -> None:
        super().set()
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()


class Gateway:
    """Builds the parts of one gateway (store, auth, metrics, accounting, circuits, token counter, and the
    `Reloader` holding the catalog, adapters and policies in use), starts and closes them in order, and is
    what a request asks for them (`catalog`, `policy_set()`, `policy_for()`, `adapter_for()`)."""

    def __init__(
        self, settings: Settings, catalog: Catalog, store: Store | None = None, adapters: AdapterFactory | None = None
    ) -> None:
        self.settings = settings
        # How a provider's adapter is built: by its kind, or (tests) a fake that answers in-process, as httpx's
        # MockTransport does for a client.
        build = adapters if adapters is not None else self._adapter_by_kind
        self.store = (
            store
            if store is not None
            else open_store(settings.resolved_database_url(), wal_limit_bytes=settings.sqlite_wal_limit_bytes)
        )
        # Gateway keys cached per process; PostgreSQL's LISTEN/NOTIFY tells every node of a change at once.
        self.auth = Authenticator(
            settings.master_key,
            self.store,
            database_url=settings.resolved_database_url(),
            cache_seconds=settings.key_cache_seconds,
            fallback_seconds=settings.key_cache_fallback_seconds,
        )
        self.metrics = Metrics(catalog, __version__)
        self.accounting = Accounting(
            self.store, settings, on_soft_limit=self.metrics.soft_limit_crossed, on_storage=self.metrics.storage_event
        )
        self.circuits = CircuitBreakers(
            settings.circuit_failures, settings.circuit_cooldown_seconds, on_change=self.metrics.circuit_changed
        )
        self.tokens = TokenCounter()  # error statistics of our prompt counts against what providers report
        # Rate limits and provider capacity: in memory, in a SQLite file shared by this node's workers, or in Redis
        # shared by every node (gateway.limits.stores).
        self.limit_store = open_limit_store(
            settings, on_unavailable=self.metrics.limits_store_unavailable, on_state=self.metrics.limits_store_up
        )
        self.leases = Leases(self.limit_store)  # concurrency slots, renewed while their requests run
        self.provider_queues = ProviderQueues(
            self.limit_store,
            on_depth=self.metrics.queue_depth,
            on_wait=self.metrics.queue_waited,
            on_capacity=self.metrics.capacity_used,
        )
        self._background: set[asyncio.Task[Any]] = set()
        initial = {name: build(p) for name, p in catalog.providers.items()}
        # The catalog, adapters and policies in use, and their reload (SIGHUP, `POST /admin/reload`, edits).
        self.reloader = Reloader(
            catalog,
            initial,
            self._load_policies(catalog),
            build_adapter=build,
            store=self.store,
            metrics=self.metrics,
            circuits=self.circuits,
            poll_seconds=settings.reload_poll_seconds,
            in_background=self.in_background,
        )
        self._unknown_policies: set[str] = set()
        self.started = False
        self.draining = False  # SIGTERM: shutting down, not ready
        self._drain_over: Drain | None = None

    async def start(self) -> None:
        await self.limit_store.open()  # (Redis: refuses to start when scripts cannot run, never a per-pod fallback)
        self.leases.start()
        if self.limit_store.kind != "redis" and self.store.url_scheme.startswith("postgres"):
            # A shared database says several nodes may run: each would keep its own limits (never silently).
            log.warning(
                "rate limits and provider capacity are kept on this node (%s) while the database is shared: with "
                "several nodes, each allows the full limits; set GATEWAY_REDIS_URL to share them",
                self.limit_store.kind,
            )
        await self.store.open()
        await self.auth.start()  # (after the store: the tables its triggers watch exist)
        await self.reloader.report_unknown_team_policies()
        await self.accounting.start()
        await self.reloader.start()  # the adapters, then the file polling and SIGHUP (if anything is reloadable)
        self.started = True

    async def close(self) -> None:
        self.started = False
        await self.reloader.stop()  # a reload under way finishes first; none starts after this
        if self._background:  # (the retired adapters' timers among them, cancelled: closed below, now)
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.accounting.close()
        await self.provider_queues.close()
        await self.leases.close()
        await self.reloader.close()
        await self.auth.close()
        await self.store.close()
        await self.limit_store.close()

    # -- the configuration in use and its reload (gateway.reload.Reloader) ------------------------

    @property
    def catalog(self) -> Catalog:
        """The catalog in use: replaced as a whole by a reload, never changed in place."""
        return self.reloader.catalog

    @property
    def adapters(self) -> dict[str, Adapter]:
        """The adapters of the catalog in use, by provider name (replaced with it)."""
        return self.reloader.adapters

    @property
    def policies(self) -> PolicyWatcher | None:
        """The policy directory in use; None: the built-in default policy."""
        return self.reloader.policies

    @property
    def config_reloads(self) -> dict[str, int]:
        return self.reloader.config_reloads

    @property
    def catalog_version(self) -> int:
        return self.reloader.catalog_version

    @property
    def catalog_loaded_at(self) -> float:
        return self.reloader.catalog_loaded_at

    @property
    def catalog_error(self) -> str | None:
        return self.reloader.catalog_error

    @property
    def retire_grace_seconds(self) -> float:
        return self.reloader.retire_grace_seconds

    @retire_grace_seconds.setter
    def retire_grace_seconds(self, seconds: float) -> None:
        self.reloader.retire_grace_seconds = seconds

    @property
    def _retiring(self) -> list[_Retiring]:  # (tests look at the retired adapters)
        return self.reloader.retiring

    @property
    def reloadable(self) -> bool:
        return self.reloader.reloadable

    def limits_status(self) -> dict[str, Any]:
        """The limit store for /readyz: its kind, whether it answers, and what happens when it does not."""
        status = getattr(self.limit_store, "status", None)
        if status is not None:
            return dict(status())
        return {"kind": self.limit_store.kind, "reachable": True, "on_failure": self.settings.redis_failure}

    def policy_status(self) -> dict[str, object]:
        return self.reloader.policy_status()

    def catalog_status(self) -> dict[str, object]:
        return self.reloader.catalog_status()

    async def reload(self) -> ConfigReload:
        return await self.reloader.reload()

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
    def drain_over(self) -> Drain:
        """Set when the drain time after SIGTERM is over: open streams and waiting requests end then."""
        if self._drain_over is None:
            self._drain_over = Drain()
        return self._drain_over

    def in_background(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _load_policies(self, catalog: Catalog) -> PolicyWatcher | None:
        """The policy directory, validated against `catalog`. An explicitly configured directory
        (GATEWAY_POLICIES_DIR) that does not validate stops start-up (PolicyError); the default one falls back
        to the built-in permissive policy (`Policy(name="default")`) with a warning, so a custom catalog
        without the shipped policies' models still starts."""
        directory = self.settings.resolved_policies_dir()
        try:
            return PolicyWatcher(directory, catalog)
        except PolicyError as exc:
            if self.settings.policies_dir is not None:
                raise
            log.warning(
                "policies in %s do not fit this catalog; using the built-in default policy:\n%s", directory, exc
            )
            return None

    def policy_set(self) -> PolicySet:
        """The policies in use; a request takes this once and keeps it to the end."""
        return self.reloader.policy_set()

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
        provider, adapter = self.reloader.serving(model)
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
