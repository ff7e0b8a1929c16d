"""Circuit breakers, one per deployment (a model at its provider).

A deployment that failed `failures` times in a row (connect errors, timeouts,
429 and 5xx before the first byte) is opened: routing skips it, so requests
go straight to the next candidate instead of waiting for a provider that is
down. After `cooldown` seconds one request is let through (half-open). Every
way that probe ends moves the circuit: the provider answering (even with a
client error) closes it, a provider failure opens it again, and an attempt
whose outcome is unknown (the client left, the gateway failed) opens it again
for another cool-down. A probe refused before it reached the provider hands
the probe to the next request. No ending leaves a circuit half-open for good.

A provider whose account is out of balance (`hold`) is opened at once for every one of its deployments, for
`quota_cooldown` seconds instead of `cooldown` (GATEWAY_QUOTA_COOLDOWN_SECONDS): each request would fail the
same way until someone tops the account up. An operator's reload (POST /admin/reload, SIGHUP, an edited file:
`Gateway` calls `release_holds` after a successful reload) or a restart releases the holds; after the hold, one
probe per deployment is let through as after any cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLOSED, HALF_OPEN, OPEN = 0, 1, 2  # the values of gateway_circuit_state


@dataclass
class Circuit:
    failures: int = 0
    state: int = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    held_for: float | None = None  # an account hold: open this long instead of the usual cool-down


@dataclass
class CircuitBreakers:
    failures: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    circuits: dict[str, Circuit] = field(default_factory=dict)
    on_change: Callable[[str, int], None] | None = None  # (deployment, new state): gateway_circuit_state

    def _set(self, deployment: str, circuit: Circuit, state: int) -> None:
        if circuit.state != state:
            circuit.state = state
            if self.on_change is not None:
                self.on_change(deployment, state)

    def allows(self, deployment: str) -> bool:
        """Whether a request may go to this deployment now (a half-open circuit lets one probe through)."""
        circuit = self.circuits.get(deployment)
        if circuit is None or circuit.state == CLOSED:
            return True
        cooldown = self.cooldown if circuit.held_for is None else circuit.held_for
        if circuit.state == OPEN and self.clock() - circuit.opened_at >= cooldown:
            self._set(deployment, circuit, HALF_OPEN)
        if circuit.state == HALF_OPEN and not circuit.probing:
            circuit.probing = True
            return True
        return False

    def succeeded(self, deployment: str) -> None:
        circuit = self.circuits.get(deployment)
        if circuit is not None:
            circuit.failures, circuit.probing, circuit.held_for = 0, False, None
            self._set(deployment, circuit, CLOSED)

    def abandoned(self, deployment: str) -> None:
        """An attempt ended without an outcome (cancelled, or an unexpected error): a probe reopens the circuit."""
        circuit = self.circuits.get(deployment)
        if circuit is not None and circuit.state == HALF_OPEN:
            circuit.probing = False
            circuit.opened_at = self.clock()
            self._set(deployment, circuit, OPEN)

    def unprobed(self, deployment: str) -> None:
        """An attempt was refused before reaching the provider: the probe goes to the next request."""
        circuit = self.circuits.get(deployment)
        if circuit is not None:
            circuit.probing = False

    def failed(self, deployment: str) -> None:
        circuit = self.circuits.setdefault(deployment, Circuit())
        circuit.failures += 1
        circuit.probing = False
        if circuit.held_for is not None and circuit.state == HALF_OPEN:
            circuit.held_for = None  # the account answers again, with another failure: an ordinary outage
        if circuit.state == HALF_OPEN or circuit.failures >= self.failures:
            circuit.opened_at = self.clock()
            self._set(deployment, circuit, OPEN)

    def hold(self, deployments: Iterable[str], seconds: float) -> None:
        """Open every deployment of a provider whose account is out of balance, for `seconds`."""
        now = self.clock()
        for name in deployments:
            circuit = self.circuits.setdefault(name, Circuit())
            circuit.failures, circuit.probing, circuit.held_for, circuit.opened_at = 0, False, seconds, now
            self._set(name, circuit, OPEN)

    def held(self, deployment: str) -> bool:
        """Whether this deployment is refused because its provider's account is out of balance."""
        circuit = self.circuits.get(deployment)
        return circuit is not None and circuit.held_for is not None and circuit.state != CLOSED

    def release_holds(self) -> list[str]:
        """Close every circuit held for an account (an operator acted); returns their deployments."""
        released = [name for name, circuit in self.circuits.items() if circuit.held_for is not None]
        for name in released:
            self.succeeded(name)
        return released

    def state(self, deployment: str) -> int:
        circuit = self.circuits.get(deployment)
        return CLOSED if circuit is None else circuit.state


def deployment(provider: str, model: str) -> str:
    return f"{provider}/{model}"
