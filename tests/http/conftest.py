"""Fixtures of the HTTP suites that talk to the emulators (the SDK suites)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.http.servers import ThreadedServer
from tests.support.emulators import Script


@pytest.fixture()
def scripts(mistral: ThreadedServer, moonshot: ThreadedServer) -> Iterator[dict[str, Script]]:
    """Both emulators' scripts, by provider name, empty at the start and emptied again at the end."""
    both = {"mistral": Script(mistral.url), "moonshot": Script(moonshot.url)}
    for script in both.values():
        script.clear()
    yield both
    for script in both.values():
        script.clear()  # other tests rely on the emulators' generated replies
