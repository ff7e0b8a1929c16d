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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

CLOSED, HALF_OPEN, OPEN = 0, 1, 2  # the values of gateway_circuit_state


@dataclass
class Circuit:
    failures: int = 0
    state: int = CLOSED
    opened_at: float = 0.0
    probing: bool = False


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
        if circuit.state == OPEN and self.clock() - circuit.opened_at >= self.cooldown:
            self._set(deployment, circuit, HALF_OPEN)
        if circuit.state == HALF_OPEN and not circuit.probing:
            circuit.probing = True
            return True
        return False

    def succeeded(self, deployment: str) -> None:
        circuit = self.circuits.get(deployment)
        if circuit is not None:
            circuit.failures, circuit.probing = 0, False
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
        if circuit.state == HALF_OPEN or circuit.failures >= self.failures:
            circuit.opened_at = self.clock()
            self._set(deployment, circuit, OPEN)

    def state(self, deployment: str) -> int:
        circuit = self.circuits.get(deployment)
        return CLOSED if circuit is None else circuit.state


def deployment(provider: str, model: str) -> str:
    return f"{provider}/{model}"
