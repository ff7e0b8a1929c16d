"""The `Gateway`: everything one running gateway holds, built once and passed in."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Callable, Coroutine

from gateway import __version__
from gateway.auth import Authenticator
from gateway.config import Catalog, ModelConfig, Settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.policy import DEFAULT_POLICY, Policy, PolicyError, PolicySet, PolicyWatcher, ReloadResult
from gateway.providers import Adapter, build_adapter
from gateway.spend.accounting import Accounting
from gateway.routing.circuits import CircuitBreakers
from gateway.tokens import TokenCounter
from gateway.store import Store, open_store

log = logging.getLogger("gateway")

POLICY_POLL_SECONDS = 2.0  # how soon an edited policy file is picked up without a SIGHUP


class Gateway:
    def __init__(self, settings: Settings, catalog: Catalog, store: Store | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store if store is not None else open_store(settings.resolved_database_url())
        self.auth = Authenticator(settings.master_key, self.store)
        self.metrics = Metrics(catalog, __version__)
        self.accounting = Accounting(self.store, settings, on_soft_limit=self.metrics.soft_limit_crossed)
        self.circuits = CircuitBreakers(
            settings.circuit_failures, settings.circuit_cooldown_seconds, on_change=self.metrics.circuit_changed
        )
        self.tokens = TokenCounter()  # error statistics of our prompt counts against what providers report
        self.adapters: dict[str, Adapter] = {name: build_adapter(p) for name, p in catalog.providers.items()}
        self.policies = self._load_policies()
        self._policy_watch: asyncio.Task[None] | None = None
        self.policy_reloads = {"success": 0, "failure": 0}  # exported as gateway_config_reloads_total later
        self._builtin_policies = PolicySet("(built-in)", {DEFAULT_POLICY: Policy(name=DEFAULT_POLICY)})
        self._unknown_policies: set[str] = set()
        self.started = False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.store.open()
        await self.accounting.start(list(self.catalog.models))
        for name, adapter in self.adapters.items():
            provider = self.catalog.providers[name]
            if provider.api_key is None and provider.kind != "litellm":
                log.warning("provider %s has no API key (%s): its models will answer 503", name, provider.kind)
            await adapter.start()
        if self.policies is not None:
            self._policy_watch = asyncio.get_running_loop().create_task(self._watch_policies())
            self._on_sighup(self.reload_policies)
        self.started = True

    def policy_status(self) -> dict[str, object]:
        if self.policies is None:
            return {"source": "built-in default", "version": 0, "last_error": None, "reloads": self.policy_reloads}
        return {
            "source": str(self.policies.directory), "version": self.policies.version,
            "names": sorted(self.policies.current), "last_error": self.policies.last_error or None,
            "reloads": self.policy_reloads,
        }  # fmt: skip

    def reload_policies(self) -> ReloadResult | None:
        """Re-read the policy directory now (SIGHUP, `POST /admin/reload`); a broken edit keeps the previous
        version in use, and says why in the log and in /readyz. In-flight requests keep the policy they took."""
        if self.policies is None:
            return None
        result = self.policies.reload()
        self._count_reload(result.ok)
        return result

    def _count_reload(self, ok: bool) -> None:
        self.policy_reloads["success" if ok else "failure"] += 1
        self.metrics.config_reloaded(ok)

    async def _watch_policies(self) -> None:
        assert self.policies is not None
        while True:
            await asyncio.sleep(POLICY_POLL_SECONDS)  # periodic check for edited files, not synchronisation
            try:
                result = self.policies.poll()
            except Exception:  # a vanished directory or a race with an editor: try again next round
                log.exception("checking the policy files failed")
                continue
            if result is not None:
                self._count_reload(result.ok)

    @staticmethod
    def _on_sighup(callback: Callable[[], object]) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests run gateways on threads) or no SIGHUP on this platform

    async def close(self) -> None:
        self.started = False
        if self._policy_watch is not None:
            self._policy_watch.cancel()
            await asyncio.gather(self._policy_watch, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.accounting.close()
        for adapter in self.adapters.values():
            await adapter.close()
        await self.store.close()

    def in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run work that must finish even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            log.warning("policies in %s do not fit this catalog; using the built-in default policy:\n%s", directory, exc)
            return None

    def policy_set(self) -> PolicySet:
        """The policies in use; a request takes this once and keeps it to the end."""
        if self.policies is None:
            return self._builtin_policies
        return self.policies.current

    def policy_for(self, policies: PolicySet, name: str | None) -> Policy:
        """A team's policy. A team naming a policy that does not exist is routed with `default`, and this is
        logged once per name (refusing every request of the team would turn a typo into an outage)."""
        wanted = name or DEFAULT_POLICY
        policy = policies.get(wanted)
        if policy is not None:
            return policy
        if wanted not in self._unknown_policies:
            self._unknown_policies.add(wanted)
            log.warning("unknown policy %r (known: %s); using %r", wanted, ", ".join(sorted(policies)), DEFAULT_POLICY)
        return policies.get(DEFAULT_POLICY) or Policy(name=DEFAULT_POLICY)

    def adapter_for(self, model: ModelConfig) -> Adapter:
        provider = self.catalog.provider_of(model)
        if provider.api_key is None and provider.kind in ("mistral", "moonshot"):
            raise GatewayError(
                503,
                f"provider {provider.name!r} has no API key configured; model {model.name!r} is unavailable",
                "upstream_error",
                "provider_not_configured",
            )
        return self.adapters[provider.name]
