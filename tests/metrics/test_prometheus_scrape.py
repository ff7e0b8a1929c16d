"""A real Prometheus server, configured by deploy/prometheus/prometheus.yml (only its target and intervals
changed), scrapes a real gateway after real requests: every metric family arrives with the values the
gateway reports, and every rule of alerts.yml evaluates without error on real data.

The server binary comes from Debian's `prometheus` package (`bash scripts/tools` extracts it into
.cache/tools/bin/ without installing the service). It listens on 127.0.0.1 only and is stopped at the end.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics.families import FAMILIES
from tests.support import ROOT
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GatewayFactory, free_port
from tests.support.http import auth, post_json, request
from tests.support.store import make_key, make_team
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PROMETHEUS = ROOT / ".cache" / "tools" / "bin" / "prometheus"
CHAT = "/v1/chat/completions"


def _get(url: str, path: str) -> Any:
    answer = request(url, "GET", path, timeout=5)
    assert answer.status == 200, (path, answer.status, answer.body)
    return answer.json()


def _eventually(check: Callable[[], Any], what: str) -> Any:
    """`wait_until` with Prometheus's pace: a minute, every 0.2 s, a server still starting is not yet."""
    return wait_until(check, 60.0, what, every=0.2, ignoring=(OSError,))


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start Prometheus on a free 127.0.0.1 port, scraping `target` (host:port) every second (with the scrape
    job's `authorization` block, if given)."""
    if not PROMETHEUS.exists():
        pytest.fail(
            f"{PROMETHEUS} is missing: run `bash scripts/tools` (it extracts it from Debian's prometheus package)"
        )
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str, authorization: dict[str, str] | None = None) -> str:
        config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
        config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / rule) for rule in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        if authorization is not None:
            job["authorization"] = authorization
        home = tmp_path / f"prometheus-{len(started)}"  # each server its own configuration and storage
        home.mkdir()
        path = home / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with open(home / "prometheus.log", "wb") as log:  # the server has its own copy of the descriptor
            process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={path}",
                    f"--storage.tsdb.path={home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        _eventually(lambda: request(url, "GET", "/-/ready", timeout=2).status == 200, "Prometheus to start")
        return url

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=30)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    data = _get(url, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_prometheus_scrapes_every_family_with_the_gateways_values(
    start_gateway: GatewayFactory, prometheus: Callable[[str], str], tmp_path: Path, mistral_log: EmulatorControl
) -> None:
    db = f"sqlite:///{tmp_path / 'scrape.db'}"
    make_team(db, "web", "10.00", soft_limit_pct=1)
    key, _ = make_key(db, "web")
    server = start_gateway(database_url=db)
    headers = auth(key)
    for i in range(5):
        assert (
            post_json(
                server.url, CHAT, {"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]}, headers
            ).status
            == 200
        )
    stream = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "stream"}], "stream": True}
    assert post_json(server.url, CHAT, stream, headers).status == 200
    assert (
        post_json(
            server.url, CHAT, {"model": "no-such-model", "messages": [{"role": "user", "content": "?"}]}, headers
        ).status
        == 404
    )
    mistral_log.fault("status=503", count=2)  # a retry, then a fallback to Kimi
    assert (
        post_json(
            server.url, CHAT, {"model": "auto", "messages": [{"role": "user", "content": "word " * 3000}]}, headers
        ).status
        == 200
    )

    url = prometheus(f"127.0.0.1:{server.port}")
    up = _eventually(lambda: query(url, 'up{job="model-gateway"} == 1'), "a successful scrape")
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"

    names = {r["metric"]["__name__"] for r in query(url, '{__name__=~"gateway_.+"}')}
    for family in FAMILIES:
        exposed = family.name + ("_count" if family.kind == "histogram" else "")
        assert exposed in names, f"{exposed} did not reach Prometheus"

    def value(promql: str) -> float:
        result = query(url, promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    assert value('sum(gateway_requests_total{team="web",status="200"})') == 7
    assert value('sum(gateway_fallbacks_total{from_model="mistral-medium-3.5",to_model="kimi-k2.6"})') == 1
    assert value('sum(gateway_upstream_errors_total{provider="mistral",kind="status_5xx"})') == 2
    assert value('sum(gateway_requests_total{model="other",status="404"})') == 1
    assert value('sum(gateway_time_to_first_token_seconds_count{model="kimi-k2.6"})') == 1
    assert value('gateway_budget_limit_usd{team="web"}') == 10
    spent = value('gateway_budget_spent_usd{team="web"}')
    assert spent > 0 and value('sum(gateway_spend_usd_total{team="web"})') == pytest.approx(spent, abs=1e-9)
    assert value('gateway_budget_remaining_usd{team="web"}') == pytest.approx(10 - spent, abs=1e-9)

    # Every rule of deploy/prometheus/alerts.yml evaluates on these series without an error.
    def evaluated() -> list[dict[str, Any]] | None:
        groups = _get(url, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = rules and all(not rule.get("lastEvaluation", "0001").startswith("0001") for rule in rules)
        return rules if done else None

    rules = _eventually(evaluated, "every rule to be evaluated")
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    firing = [r["name"] for r in rules if r["type"] == "alerting" and r["state"] == "firing"]
    assert "GatewayBudgetExhausted" not in firing


def test_prometheus_scrapes_a_gateway_with_a_master_key_using_the_metrics_token(
    start_gateway: GatewayFactory, prometheus: Callable[..., str], tmp_path: Path
) -> None:
    """With a master key, the gateway's /metrics needs credentials: Prometheus configured with the
    authorization block the Kubernetes scrape config ships (the token from a file) scrapes it; the same
    Prometheus without it gets 401 (its target is down), and nothing about the team reaches it."""
    db = f"sqlite:///{tmp_path / 'auth.db'}"
    make_team(db, "hidden", "7.00")
    server = start_gateway(database_url=db, master_key="mk-prom", metrics_token="tok-prom")
    token = tmp_path / "gateway-metrics-token"
    token.write_text("tok-prom\n")  # Prometheus trims the trailing newline of a credentials file
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-kubernetes.yml").read_text())
    block = {**shipped["scrape_configs"][0]["authorization"], "credentials_file": str(token)}
    url = prometheus(f"127.0.0.1:{server.port}", block)
    _eventually(lambda: query(url, 'up{job="model-gateway"} == 1'), "a successful scrape with the token")
    limit = query(url, 'gateway_budget_limit_usd{team="hidden"}')
    assert [float(r["value"][1]) for r in limit] == [7.0]

    other = prometheus(f"127.0.0.1:{server.port}")  # no credentials
    _eventually(lambda: query(other, 'up{job="model-gateway"} == 0'), "a refused scrape without the token")
    assert query(other, 'gateway_budget_limit_usd{team="hidden"}') == []
