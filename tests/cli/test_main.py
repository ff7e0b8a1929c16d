"""The `gateway` command as users run it: real subprocesses, real ports on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import ROOT
from tests.support.gateways import GATEWAY, clean_env, free_port, run_cli, wait_for_startup
from tests.support.http import request

pytestmark = pytest.mark.slow


@pytest.fixture()
def demo_gateway() -> Iterator[tuple[str, list[str]]]:
    port = free_port()
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        yield f"http://127.0.0.1:{port}", wait_for_startup(process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_demo_mode_without_keys(demo_gateway: tuple[str, list[str]]) -> None:
    url, startup = demo_gateway
    text = "\n".join(startup)
    assert "DEMO MODE" in text and "mistral emulator" in text and "moonshot emulator" in text
    assert "OPEN: GATEWAY_MASTER_KEY is not set" in text
    ready = request(url, "GET", "/readyz").json()
    assert ready["mode"] == "demo" and ready["demo"] is True and "demo mode" in ready["notice"]
    client = openai.OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0)
    for model in ("mistral-medium-3.5", "kimi-k2.6"):
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content and answer.usage.prompt_tokens > 0
    assert {m.id for m in client.models.list().data} >= {"auto", "mistral-medium-3.5", "kimi-k2.6"}


def test_keys_set_means_no_demo(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(MISTRAL_API_KEY="real-looking-key", MISTRAL_API_BASE="http://127.0.0.1:9/v1")
    process = subprocess.Popen([*GATEWAY, "serve", "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        text = "\n".join(wait_for_startup(process))
        assert "DEMO MODE" not in text
        assert request(f"http://127.0.0.1:{port}", "GET", "/readyz").json()["mode"] == "live"
        assert "real-looking-key" not in text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_check_accepts_the_defaults_and_the_example() -> None:
    assert run_cli("check").returncode == 0
    example = ROOT / "config" / "catalog.example.yaml"
    result = run_cli("check", "--config", str(example))
    assert result.returncode == 0 and "OK" in result.stdout


def test_check_names_file_path_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  - {name: mistral, kind: mistral, region: eu, base_url: 'https://api.mistral.ai/v1'}\n"
        "models:\n  - {name: m, provider: mistral, upstream_model: u, context_window: lots, max_output_tokens: 1,"
        " price: {input: 1, output: 1}, colour: blue}\n"
    )
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 1
    assert f"{bad}: models[0].context_window:" in result.stderr
    assert f"{bad}: models[0].colour: Extra inputs are not permitted" in result.stderr


def test_serve_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("providers: [\n")
    result = run_cli("serve", "--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 2 and str(bad) in result.stderr and "not valid YAML" in result.stderr


def test_models_table_marks_litellm_differences() -> None:
    result = run_cli("models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    kimi = next(line for line in lines if line.startswith("kimi-k2.6"))
    assert "1,048,576" in kimi and "differs*" in kimi
    assert "kimi-k2.6: context_window is 1048576 here, 262144 in litellm" in result.stdout
    medium = next(line for line in lines if line.startswith("mistral-medium-3.5"))
    assert medium.endswith("same")


def test_help_and_usage_errors() -> None:
    for command in ([], ["serve"], ["check"], ["models"], ["emulate"]):
        assert run_cli(*command, "--help").returncode == 0
    assert run_cli("launch").returncode == 2
    assert run_cli("emulate", "openai").returncode == 2


def test_emulate_command_serves_the_provider_api() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*GATEWAY, "emulate", "moonshot", "--port", str(port), "--api-key", "k1"],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_startup(process)
        models = request(f"http://127.0.0.1:{port}", "GET", "/v1/models", headers={"authorization": "Bearer k1"})
        assert models.status == 200 and any(m["id"] == "kimi-k2.6" for m in models.json()["data"])
        refused = request(f"http://127.0.0.1:{port}", "GET", "/v1/models", headers={"authorization": "Bearer other"})
        assert refused.status == 401
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_several_workers_serve_in_demo_mode() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port), "--workers", "2"], stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        text = "\n".join(wait_for_startup(process, workers=2))
        assert "with 2 worker(s)" in text
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        answers = [
            client.chat.completions.create(model="kimi-k2.6", messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(6)
        ]
        assert all(a.choices[0].message.content for a in answers)
        assert request(f"http://127.0.0.1:{port}", "GET", "/readyz").json()["mode"] == "demo"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize(
    "url", ["postgresql://gw:secret-pw@127.0.0.1:1/gateway", "sqlite:////proc/no-such-dir/gateway.db"]
)
def test_serve_with_an_unusable_database_says_so_in_one_line_and_exits_2(url: str) -> None:
    result = subprocess.run(
        [*GATEWAY, "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(GATEWAY_DATABASE_URL=url),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gateway: cannot use the database "), result.stderr
    assert "listening" not in result.stderr and "secret-pw" not in result.stderr and "Traceback" not in result.stderr
