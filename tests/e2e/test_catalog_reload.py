"""Reloading the catalog file at run time (SIGHUP, `POST /admin/reload`, an edited file), against real
gateways under uvicorn and the emulators: added models are served, prices apply to the next request, a broken
or policy-incompatible catalog is rejected as a whole, in-flight requests finish on the adapter they took."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.catalog import DEMO_UPSTREAMS_ENV, load_catalog
from gateway.emulators import EmulatorOptions, start_emulator
from gateway.http.servers import ThreadedServer
from gateway.money import usd_text
from gateway.pricing import cost_nanos
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.types import Usage
from tests.support import ROOT, sse
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, EmulatorControl
from tests.support.gateways import GATEWAY, GatewayFactory, clean_env, free_port, wait_for_startup
from tests.support.http import Answer, begin_post_json, post_json, request

pytestmark = pytest.mark.slow

POLICIES = ROOT / "policies"
MASTER = "mk-catalog-reload"
ADMIN = {"authorization": f"Bearer {MASTER}"}
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Say something short."}]
SMALL = {
    "name": "mistral-small",
    "provider": "mistral",
    "upstream_model": "mistral-small-latest",
    "context_window": 131072,
    "max_output_tokens": 8192,
    "price": {"input": "0.10", "output": "0.30"},
    "capabilities": ["chat", "tools"],
}
STILL = 3600.0  # a poll interval no test waits for: only the reloads a test asks for happen


def builtin_spec() -> dict[str, Any]:
    return yaml.safe_load(resources.files("gateway").joinpath("defaults/catalog.yaml").read_text("utf-8"))


def write_catalog(path: Path, spec: dict[str, Any] | str) -> None:
    """Replace the file at once (as editors and config management do), so a poll never reads half of it."""
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def model_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in spec["models"] if m["name"] == name)


def gateway_of(server: ThreadedServer) -> Gateway:
    return server.app.state.gateway


def reload(url: str) -> Answer:
    return post_json(url, "/admin/reload", {}, ADMIN)


def model_ids(url: str) -> set[str]:
    return {m["id"] for m in request(url, "GET", "/v1/models", headers=ADMIN).json()["data"]}


def chat(url: str, model: str, **extra: Any) -> Answer:
    return post_json(url, CHAT, {"model": model, "messages": HI, "max_tokens": 16, **extra}, ADMIN)


def expected_cost(catalog_path: Path, model: str, answer: Answer) -> str:
    """What `x-gateway-cost-usd` must say for `answer` at the prices now in the file."""
    usage = answer.json()["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    priced = load_catalog(catalog_path, {}).models[model]
    return usd_text(cost_nanos(priced, Usage(usage["prompt_tokens"], usage["completion_tokens"], cached)))


class LogWaiter(logging.Handler):
    """Sets an event when the gateway logs a record matching `predicate` (synchronisation without sleeping)."""

    def __init__(self, predicate: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(logging.DEBUG)
        self.predicate = predicate
        self.seen = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.predicate(record):
            self.records.append(record)
            self.seen.set()

    def wait(self, timeout: float = 15.0) -> logging.LogRecord:
        assert self.seen.wait(timeout), f"no matching log record within {timeout} s"
        return self.records[-1]


@pytest.fixture()
def gateway_log() -> Iterator[Callable[[Callable[[logging.LogRecord], bool]], LogWaiter]]:
    logger = logging.getLogger("gateway")
    level, handlers = logger.level, []
    logger.setLevel(logging.INFO)

    def waiter(predicate: Callable[[logging.LogRecord], bool]) -> LogWaiter:
        handler = LogWaiter(predicate)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield waiter
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture()
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    write_catalog(path, builtin_spec())
    return path


def start(start_gateway: GatewayFactory, path: Path | None, **settings: Any) -> ThreadedServer:
    settings.setdefault("reload_poll_seconds", STILL)
    return start_gateway(config=path, master_key=MASTER, policies_dir=POLICIES, **settings)


# -- through the admin API -------------------------------------------------------------------------


def test_added_model_is_listed_and_served_after_admin_reload(
    start_gateway: GatewayFactory, catalog_file: Path, mistral_log: EmulatorControl
) -> None:
    server = start(start_gateway, catalog_file, circuit_failures=2)
    url, gateway = server.url, gateway_of(server)
    assert "mistral-small" not in model_ids(url)
    assert chat(url, "mistral-small").error["code"] == "model_not_found"

    spec = builtin_spec()
    spec["models"].append(SMALL)
    write_catalog(catalog_file, spec)
    assert post_json(url, "/admin/reload", {}).status == 401  # master key only
    reloaded = reload(url)
    assert reloaded.status == 200, reloaded.body
    body = reloaded.json()
    assert body["ok"] is True and body["changed"] is True and body["error"] is None
    assert (
        body["catalog"]["changed"] is True and body["catalog"]["version"] == 2 and body["catalog"]["last_error"] is None
    )
    assert body["reloads"] == {"success": 1, "failure": 0} == gateway.config_reloads

    assert "mistral-small" in model_ids(url)
    card = request(url, "GET", "/v1/models/mistral-small", headers=ADMIN).json()
    assert card["context_window"] == 131072 and card["pricing"]["input_per_million"] == "0.10"
    answer = chat(url, "mistral-small")
    assert answer.status == 200, answer.body
    assert answer.headers["x-gateway-model"] == "mistral-small" and answer.headers["x-gateway-provider"] == "mistral"
    assert mistral_log.last()["body"]["model"] == "mistral-small-latest"
    assert answer.headers["x-gateway-cost-usd"] == expected_cost(catalog_file, "mistral-small", answer)
    ready = request(url, "GET", "/readyz").json()
    assert ready["status"] == "ready" and "mistral-small" in ready["models"]
    assert ready["catalog"]["version"] == 2 and ready["catalog"]["source"] == str(catalog_file)
    assert ready["catalog"]["reloads"] == ready["policies"]["reloads"] == {"success": 1, "failure": 0}
    # The policies were validated against the new catalog and swapped in with it.
    assert ready["policies"]["version"] == 2

    # What a new model needs elsewhere: token statistics learn from its usage, the circuit breaker knows it,
    # and its metrics series exist.
    assert gateway.tokens.error_stats("mistral-small")["n"] == 1
    metrics = request(url, "GET", "/metrics", headers=ADMIN).body.decode()
    assert 'gateway_circuit_state{model="mistral-small",provider="mistral"} 0.0' in metrics
    mistral_log.fault("status=503", count=2)  # the attempt and the policy's one retry
    assert chat(url, "mistral-small").status == 503
    refused = chat(url, "mistral-small")
    assert refused.status == 503 and refused.error["code"] == "circuit_open"
    metrics = request(url, "GET", "/metrics", headers=ADMIN).body.decode()
    assert 'gateway_circuit_state{model="mistral-small",provider="mistral"} 2.0' in metrics

    unchanged = reload(url)  # the same file again: nothing to swap, still a successful reload
    assert unchanged.status == 200 and unchanged.json()["catalog"]["changed"] is False
    assert unchanged.json()["catalog"]["version"] == 2 and gateway.config_reloads == {"success": 2, "failure": 0}


def test_a_price_change_applies_to_the_next_request(
    start_gateway: GatewayFactory, catalog_file: Path, mistral_log: EmulatorControl
) -> None:
    url = start(start_gateway, catalog_file).url
    before = chat(url, "mistral-medium-3.5")
    assert before.status == 200 and before.headers["x-gateway-cost-usd"] == expected_cost(
        catalog_file, "mistral-medium-3.5", before
    )

    spec = builtin_spec()
    model_of(spec, "mistral-medium-3.5")["price"] = {"input": "15.00", "output": "75.00"}
    write_catalog(catalog_file, spec)
    assert reload(url).json()["ok"] is True
    after = chat(url, "mistral-medium-3.5")
    assert after.status == 200
    assert after.headers["x-gateway-cost-usd"] == expected_cost(catalog_file, "mistral-medium-3.5", after)
    assert after.headers["x-gateway-cost-usd"] != before.headers["x-gateway-cost-usd"]
    card = request(url, "GET", "/v1/models/mistral-medium-3.5", headers=ADMIN).json()
    assert card["pricing"]["input_per_million"] == "15.00"


def test_a_broken_catalog_is_rejected_and_the_previous_one_keeps_serving(
    start_gateway: GatewayFactory, catalog_file: Path, mistral_log: EmulatorControl, caplog: pytest.LogCaptureFixture
) -> None:
    spec = builtin_spec()
    spec["models"].append(SMALL)
    write_catalog(catalog_file, spec)
    server = start(start_gateway, catalog_file)
    url, gateway = server.url, gateway_of(server)
    assert chat(url, "mistral-small").status == 200

    broken = builtin_spec()
    model_of(broken, "mistral-medium-3.5")["price"]["input"] = "-1"
    write_catalog(catalog_file, broken)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        rejected = reload(url)
    assert rejected.status == 422
    body = rejected.json()
    assert body["ok"] is False and body["changed"] is False and body["catalog"]["changed"] is False
    assert str(catalog_file) in body["error"] and "not reloaded" in body["error"]
    assert any(p.startswith(f"{catalog_file}: models[0].price.input:") for p in body["problems"]), body["problems"]
    assert body["reloads"] == {"success": 0, "failure": 1} == gateway.config_reloads
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "gateway"]
    assert (
        logged and str(catalog_file) in logged[-1].getMessage() and "models[0].price.input" in logged[-1].getMessage()
    )

    # The previous catalog is still in use, whole.
    assert "mistral-small" in model_ids(url)
    answer = chat(url, "mistral-small")
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "mistral-small"
    ready = request(url, "GET", "/readyz")
    assert ready.status == 200 and ready.json()["status"] == "ready"
    status = ready.json()["catalog"]
    assert (
        status["version"] == 1 and str(catalog_file) in status["last_error"] and "price.input" in status["last_error"]
    )
    assert status["reloads"]["failure"] == 1

    write_catalog(catalog_file, "providers: [\n")  # not YAML at all
    unreadable = reload(url)
    assert unreadable.status == 422 and any("not valid YAML" in p for p in unreadable.json()["problems"])
    catalog_file.unlink()
    missing = reload(url)
    assert missing.status == 422 and any("cannot read file" in p for p in missing.json()["problems"])
    assert gateway.config_reloads == {"success": 0, "failure": 3}

    write_catalog(catalog_file, spec)  # the good version back: the error clears
    fixed = reload(url)
    assert fixed.status == 200 and fixed.json()["catalog"]["last_error"] is None
    assert request(url, "GET", "/readyz").json()["catalog"]["last_error"] is None


def test_a_catalog_the_policies_do_not_validate_against_is_rejected(
    start_gateway: GatewayFactory, catalog_file: Path, moonshot_log: EmulatorControl
) -> None:
    server = start(start_gateway, catalog_file)
    url, gateway = server.url, gateway_of(server)
    spec = builtin_spec()
    spec["models"] = [m for m in spec["models"] if m["name"] != "kimi-k2.6"]  # the shipped policies name it
    spec["models"].append(SMALL)
    write_catalog(catalog_file, spec)
    rejected = reload(url)
    assert rejected.status == 422
    body = rejected.json()
    assert body["ok"] is False and "policies" in body["error"] and str(POLICIES) in body["error"]
    assert any("kimi-k2.6" in p and ".yaml" in p for p in body["problems"]), body["problems"]
    assert gateway.config_reloads == {"success": 0, "failure": 1}

    # Neither the catalog nor the policies changed.
    assert "kimi-k2.6" in model_ids(url) and "mistral-small" not in model_ids(url)
    answer = chat(url, "kimi-k2.6")
    assert answer.status == 200 and answer.headers["x-gateway-model"] == "kimi-k2.6"
    ready = request(url, "GET", "/readyz").json()
    assert ready["catalog"]["version"] == 1 and "do not validate" in ready["catalog"]["last_error"]
    assert "kimi-k2.6" in ready["catalog"]["last_error"]
    assert ready["policies"]["version"] == 1
    assert gateway.policies is not None and gateway.policies.catalog is gateway.catalog


def test_builtin_catalog_reload_rereads_the_policies_only(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    server = start_gateway(master_key=MASTER, policies_dir=directory, reload_poll_seconds=STILL)
    url, gateway = server.url, gateway_of(server)
    catalog = gateway.catalog
    default = directory / "default.yaml"
    default.write_text(
        default.read_text().replace(
            "prefer: [mistral-medium-3.5, kimi-k2.6]", "prefer: [kimi-k2.6, mistral-medium-3.5]"
        )
    )
    reloaded = reload(url)
    assert reloaded.status == 200
    body = reloaded.json()
    assert (
        body["catalog"]["reloadable"] is False
        and body["catalog"]["changed"] is False
        and body["catalog"]["version"] == 1
    )
    assert body["changed"] is True and body["policies"]["version"] == 2 and body["version"] == 2
    assert gateway.catalog is catalog
    assert chat(url, "auto").headers["x-gateway-model"] == "kimi-k2.6"


# -- requests in flight ----------------------------------------------------------------------------


def test_inflight_stream_finishes_when_a_reload_moves_its_provider(
    start_gateway: GatewayFactory, catalog_file: Path, mistral_log: EmulatorControl, mistral: ThreadedServer
) -> None:
    spec = builtin_spec()
    provider = spec["providers"][0]
    assert provider["name"] == "mistral"
    del provider["base_url_env"]
    provider["base_url"] = mistral.url + "/v1"
    write_catalog(catalog_file, spec)
    server = start(start_gateway, catalog_file)
    url, gateway = server.url, gateway_of(server)
    old_adapter = gateway.adapters["mistral"]
    stream = {
        "model": "mistral-medium-3.5",
        "messages": HI,
        "max_tokens": 40,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    with start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY)) as moved:
        moved_log = EmulatorControl(moved.url)
        mistral_log.fault("first_token=2000")  # the provider answers, then keeps the first token for 2 s
        connection = begin_post_json(url, CHAT, stream, ADMIN)
        try:
            response = connection.getresponse()  # the headers: the gateway is relaying, nothing sent yet
            assert response.status == 200 and response.getheader("x-gateway-provider") == "mistral"

            provider["base_url"] = moved.url + "/v1"
            write_catalog(catalog_file, spec)
            reloaded = reload(url)
            reloaded_at = time.monotonic()
            assert reloaded.status == 200 and reloaded.json()["catalog"]["changed"] is True, reloaded.body
            assert gateway.adapters["mistral"] is not old_adapter

            first = response.readline()
            first_at = time.monotonic()
            body = first + response.read()
        finally:
            connection.close()
        assert reloaded_at < first_at  # the reload was done while the stream waited for its first token
        events = sse.events(body)
        assert events[-1] == "[DONE]" and not any(isinstance(e, dict) and "error" in e for e in events), events
        chunks = [e for e in events if isinstance(e, dict)]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text and any(c["choices"][0].get("finish_reason") for c in chunks if c.get("choices"))
        assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["x_gateway"]["provider"] == "mistral"
        assert len(mistral_log.requests()) == 1 and moved_log.requests() == []

        # New requests go to the new URL, and get the same answer there (the stream above was intact).
        again = post_json(url, CHAT, stream, ADMIN)
        assert again.status == 200 and len(moved_log.requests()) == 1 and len(mistral_log.requests()) == 1
        again_text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in sse.events(again.body)
            if isinstance(c, dict) and c.get("choices")
        )
        assert again_text == text


def test_replaced_adapters_close_after_their_timeout_and_at_once_on_close(
    catalog_file: Path, mistral: ThreadedServer, tmp_path: Path
) -> None:
    """In-process: the adapter a reload replaced stays open for requests that planned with the previous
    catalog, is closed after its provider's total timeout (plus the grace), and `close()` does not wait."""
    spec = builtin_spec()
    for provider in spec["providers"]:
        provider["timeouts"] = {"total": 0.3}
    write_catalog(catalog_file, spec)
    env = {"MISTRAL_API_KEY": MISTRAL_KEY, "MISTRAL_API_BASE": mistral.url + "/v1", "MOONSHOT_API_KEY": "k"}
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'gateway.db'}", policies_dir=POLICIES, reload_poll_seconds=STILL
    )

    async def scenario() -> None:
        gateway = Gateway(settings, load_catalog(catalog_file, env))
        await gateway.start()
        try:
            gateway.retire_grace_seconds = 0.0
            first = gateway.catalog
            old = gateway.adapters["mistral"]
            model_of(spec, "mistral-medium-3.5")["price"]["input"] = "2.00"  # a model changes: same adapters
            write_catalog(catalog_file, spec)
            assert (await gateway.reload()).catalog_changed and gateway.adapters["mistral"] is old
            assert gateway._retiring == []
            second = gateway.catalog
            spec["providers"][0]["max_connections"] = 7  # the provider changes: a new adapter
            write_catalog(catalog_file, spec)
            result = await gateway.reload()
            assert result.ok and result.catalog_changed
            new = gateway.adapters["mistral"]
            assert new is not old and gateway.adapters["moonshot"] is not None
            # A request that planned with the previous catalog gets the adapter that catalog configured;
            # one planned with the catalog before that (no adapter retired then) gets the current one.
            assert gateway.adapter_for(second.models["mistral-medium-3.5"]) is old
            assert gateway.adapter_for(first.models["mistral-medium-3.5"]) is new
            assert gateway.adapter_for(gateway.catalog.models["mistral-medium-3.5"]) is new
            (retiring,) = gateway._retiring
            await asyncio.wait_for(asyncio.shield(retiring.task), 10)  # closes after 0.3 s
            assert old._session is None and gateway._retiring == []
            assert gateway.adapter_for(second.models["mistral-medium-3.5"]) is new

            spec["providers"][0]["timeouts"] = {"total": 900}  # the default: its adapter would be kept 15 min
            write_catalog(catalog_file, spec)
            assert (await gateway.reload()).ok
            slow = gateway.adapters["mistral"]
            spec["providers"][0]["max_connections"] = 8
            write_catalog(catalog_file, spec)
            assert (await gateway.reload()).ok
            assert any(r.adapters.get("mistral") is slow for r in gateway._retiring) and slow._session is not None
        finally:
            await asyncio.wait_for(gateway.close(), 10)  # does not wait for the 15 minutes
        assert slow._session is None and gateway.adapters["mistral"]._session is None and gateway._retiring == []
        assert (await gateway.reload()).attempted is False  # closed: no reload starts

    asyncio.run(scenario())


# -- file changes, SIGHUP, demo mode ----------------------------------------------------------------


def test_an_edited_catalog_file_is_picked_up_by_polling(
    start_gateway: GatewayFactory, catalog_file: Path, gateway_log: Callable[..., LogWaiter]
) -> None:
    loaded = gateway_log(lambda r: r.getMessage().startswith("catalog version 2 loaded"))
    server = start(start_gateway, catalog_file, reload_poll_seconds=0.05)
    url, gateway = server.url, gateway_of(server)
    spec = builtin_spec()
    spec["models"].append(SMALL)
    write_catalog(catalog_file, spec)
    record = loaded.wait()
    assert "added mistral-small" in record.getMessage()
    assert "mistral-small" in model_ids(url) and chat(url, "mistral-small").status == 200

    rejected = gateway_log(lambda r: r.levelno == logging.ERROR and str(catalog_file) in r.getMessage())
    broken = dict(spec, models=[*spec["models"], {**SMALL, "name": "auto"}])
    write_catalog(catalog_file, broken)
    assert "'auto' is reserved" in rejected.wait().getMessage()
    status = request(url, "GET", "/readyz").json()["catalog"]
    assert status["version"] == 2 and "'auto' is reserved" in status["last_error"]
    assert gateway.config_reloads["failure"] >= 1
    assert chat(url, "mistral-small").status == 200


def test_demo_mode_substitution_survives_a_reload(
    start_gateway: GatewayFactory,
    catalog_file: Path,
    mistral: ThreadedServer,
    moonshot: ThreadedServer,
    mistral_log: EmulatorControl,
) -> None:
    spec = builtin_spec()
    for provider in spec["providers"]:  # the real APIs, as the shipped catalog says: demo mode must replace them
        provider.pop("base_url_env")
        provider["base_url"] = "http://127.0.0.1:9/v1"
    write_catalog(catalog_file, spec)
    demo = {
        "mistral": {"url": mistral.url + "/v1", "key": MISTRAL_KEY},
        "moonshot": {"url": moonshot.url + "/v1", "key": MOONSHOT_KEY},
    }
    server = start(start_gateway, catalog_file, env={DEMO_UPSTREAMS_ENV: orjson.dumps(demo).decode()})
    url = server.url
    spec["models"].append(SMALL)
    write_catalog(catalog_file, spec)
    assert reload(url).json()["catalog"]["changed"] is True
    ready = request(url, "GET", "/readyz").json()
    assert ready["mode"] == "demo" and all(p["demo"] for p in ready["providers"].values())
    answer = chat(url, "mistral-small")
    assert answer.status == 200, answer.body
    assert mistral_log.last()["body"]["model"] == "mistral-small-latest"


def test_sighup_reloads_the_catalog_of_gateway_serve_in_demo_mode(tmp_path: Path) -> None:

    path = tmp_path / "catalog.yaml"
    write_catalog(path, builtin_spec())
    port = free_port()
    env = clean_env(GATEWAY_RELOAD_POLL_SECONDS=str(STILL))
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), "--config", str(path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_startup(process)
        assert request(url, "GET", "/readyz").json()["catalog"]["version"] == 1
        spec = builtin_spec()
        spec["models"].append(SMALL)
        write_catalog(path, spec)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while request(url, "GET", "/readyz").json()["catalog"]["version"] != 2:  # the reload runs after the signal
            assert time.monotonic() < deadline, "SIGHUP did not reload the catalog within 15 s"
            time.sleep(0.02)
        ready = request(url, "GET", "/readyz").json()
        assert ready["mode"] == "demo" and "mistral-small" in ready["models"]
        assert all(p["demo"] for p in ready["providers"].values())
        answer = post_json(url, CHAT, {"model": "mistral-small", "messages": HI, "max_tokens": 8})
        assert answer.status == 200 and answer.headers["x-gateway-model"] == "mistral-small", answer.body
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
