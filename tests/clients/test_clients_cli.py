"""`gateway clients TOOL`: the files each tool reads, from the catalog or from a running gateway's /v1/models."""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.cli.main import main as gateway_cli
from tests.support.coding_tools import ClientGateway
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, auth, post_json
from tests.support.store import make_key, make_team


def test_every_tool_prints_its_configuration_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for tool in ("aider", "continue", "opencode", "vibe", "kimi", "codex"):
        assert gateway_cli(["clients", tool, "--print", "--dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "http://127.0.0.1:4000/v1" in out and "# run:" in out, out
    assert list(tmp_path.iterdir()) == []
    assert gateway_cli(["clients", "kimi", "--print"]) == 0
    assert "LIMITATION" in capsys.readouterr().out  # kimi-cli is archived: said in the output


def test_files_carry_the_catalog_windows_and_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    assert gateway_cli(["clients", "aider", "--model", "kimi-k2.6", "--dir", str(tmp_path)]) == 0
    metadata = json.loads((tmp_path / ".aider.model.metadata.json").read_text())
    assert metadata["openai/kimi-k2.6"]["max_input_tokens"] == 1_048_576
    assert metadata["openai/mistral-medium-3.5"]["input_cost_per_token"] == pytest.approx(1.5e-6)
    assert metadata["openai/auto"]["max_input_tokens"] == 1_048_576 and "openai/codestral" not in metadata
    settings = {s["name"]: s for s in yaml.safe_load((tmp_path / ".aider.model.settings.yml").read_text())}
    assert settings["openai/kimi-k2.6"]["use_temperature"] is False and settings["openai/auto"]["edit_format"] == "diff"
    assert yaml.safe_load((tmp_path / ".aider.conf.yml").read_text())["model"] == "openai/kimi-k2.6"

    assert gateway_cli(["clients", "continue", "--dir", str(tmp_path / "c")]) == 0
    models = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["models"]
    roles: dict = {}
    for m in models:  # the first model of each role is the one Continue uses by default
        for role in m["roles"]:
            roles.setdefault(role, m)
    assert roles["chat"]["model"] == "auto" and roles["chat"]["defaultCompletionOptions"]["contextLength"] == 1_048_576
    assert (roles["autocomplete"]["provider"], roles["autocomplete"]["model"]) == ("mistral", "codestral")
    assert roles["embed"]["model"] == "mistral-embed" and {"edit", "apply"} <= set(roles["chat"]["roles"])

    assert gateway_cli(["clients", "opencode", "--dir", str(tmp_path / "o")]) == 0
    opencode = json.loads((tmp_path / "o" / "opencode.json").read_text())
    provider = opencode["provider"]["gateway"]
    assert provider["options"]["apiKey"] == "{env:GATEWAY_API_KEY}" and opencode["model"] == "gateway/auto"
    assert provider["models"]["mistral-medium-3.5"]["limit"]["context"] == 262_144

    assert gateway_cli(["clients", "vibe", "--dir", str(tmp_path / "v")]) == 0
    vibe = tomllib.loads((tmp_path / "v" / "config.toml").read_text())
    assert vibe["active_model"] == "gateway-auto" and vibe["enable_telemetry"] is False
    assert {m["name"]: m["max_context_length"] for m in vibe["models"]}["kimi-k2.6"] == 1_048_576

    assert gateway_cli(["clients", "kimi", "--dir", str(tmp_path / "k")]) == 0
    kimi = tomllib.loads((tmp_path / "k" / "config.toml").read_text())
    assert kimi["providers"]["gateway"]["type"] == "openai_legacy" and kimi["models"]["auto"]["max_context_size"] > 0
    capsys.readouterr()


def test_existing_files_are_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "opencode.json").write_text("{}\n")
    assert gateway_cli(["clients", "opencode", "--dir", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err and (tmp_path / "opencode.json").read_text() == "{}\n"
    assert gateway_cli(["clients", "opencode", "--dir", str(tmp_path), "--force"]) == 0
    assert json.loads((tmp_path / "opencode.json").read_text())["model"] == "gateway/auto"
    assert gateway_cli(["clients", "aider", "--model", "no-such-model", "--print"]) == 2
    assert gateway_cli(["clients", "aider", "--model", "mistral-embed", "--print"]) == 2


def test_codex_config_names_the_gateway_as_a_responses_provider_and_keeps_the_key_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.toml: the provider (Responses wire API, the key's variable), the model and its window, telemetry
    and plugin sync off; the key only in gateway.env (0600), quoted for the shell."""
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    key = "gw-test'$key"  # shell metacharacters: the env file must quote them
    home = tmp_path / "codex"
    assert gateway_cli(["clients", "codex", "--model", "mistral-medium-3.5", "--key", key, "--dir", str(home)]) == 0
    assert "x-gateway-dropped-tools" in capsys.readouterr().out  # the web_search limitation is said
    text = (home / "config.toml").read_text()
    config = tomllib.loads(text)
    assert (config["model"], config["model_provider"], config["model_context_window"]) == (
        "mistral-medium-3.5",
        "gateway",
        262_144,
    )
    provider = config["model_providers"]["gateway"]
    assert (provider["base_url"], provider["wire_api"], provider["env_key"]) == (
        "http://127.0.0.1:4000/v1",
        "responses",
        "GATEWAY_API_KEY",
    )
    assert provider["request_max_retries"] == provider["stream_max_retries"] == 1
    assert config["analytics"]["enabled"] is False and config["features"]["plugins"] is False
    assert config["check_for_update_on_startup"] is False and config["otel"]["exporter"] == "none"
    assert key not in text and "gw-" not in text.replace("gw-...", "")
    assert oct((home / "config.toml").stat().st_mode & 0o777) != "0o600"  # no secret in it
    env = home / "gateway.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    exports = [shlex.split(line) for line in env.read_text().splitlines() if line.startswith("export ")]
    assert exports == [["export", f"GATEWAY_API_KEY={key}"]]

    assert gateway_cli(["clients", "codex", "--dir", str(tmp_path / "open")]) == 0  # no key: keep an exported one
    assert (
        'export GATEWAY_API_KEY="${GATEWAY_API_KEY:-open-gateway}"' in (tmp_path / "open" / "gateway.env").read_text()
    )
    assert tomllib.loads((tmp_path / "open" / "config.toml").read_text())["model_context_window"] == 1_048_576
    capsys.readouterr()


@pytest.mark.slow
def test_url_reads_the_models_from_the_gateway_and_writes_the_key(
    client_gateway: ClientGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        gateway_cli(
            ["clients", "continue", "--url", client_gateway.url, "--key", client_gateway.key, "--dir", str(tmp_path)]
        )
        == 0
    )
    assert f"{client_gateway.url}/v1/models" in capsys.readouterr().out
    config = tmp_path / "config.yaml"
    assert oct(config.stat().st_mode & 0o777) == "0o600"  # it holds the key
    chat = yaml.safe_load(config.read_text())["models"][0]
    assert (chat["apiBase"], chat["apiKey"]) == (client_gateway.base_url, client_gateway.key)


def _post(url: str, key: str, body: dict) -> Answer:
    """POST to a full URL as a tool configured with it would: both key headers (Continue's FIM requests send both)."""
    parts = urlsplit(url)
    return post_json(f"{parts.scheme}://{parts.netloc}", parts.path, body, auth(key, **{"x-api-key": key}), timeout=20)


@pytest.mark.slow
def test_continue_autocomplete_and_embeddings_entries_reach_their_routes(
    client_gateway: ClientGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cn` has no autocomplete: send what Continue's `mistral` provider sends for the written autocomplete
    entry (FIM on {apiBase}fim/completions), the same through /v1/completions with `suffix`, and an embedding."""
    assert (
        gateway_cli(
            ["clients", "continue", "--url", client_gateway.url, "--key", client_gateway.key, "--dir", str(tmp_path)]
        )
        == 0
    )
    capsys.readouterr()
    models = yaml.safe_load((tmp_path / "config.yaml").read_text())["models"]
    fim = next(m for m in models if "autocomplete" in m["roles"])
    embed = next(m for m in models if "embed" in m["roles"])
    body = {
        "model": fim["model"],
        "prompt": "def add(a, b):\n    ",
        "suffix": "\n\nprint(add(1, 2))\n",
        "max_tokens": 64,
        "temperature": 0.01,
        "top_p": 1,
        "stop": ["\n\n"],
        "stream": True,
    }
    fim_answer = _post(fim["apiBase"] + "fim/completions", fim["apiKey"], body)
    assert fim_answer.status == 200, fim_answer.body
    assert any(isinstance(e, dict) and e.get("choices") for e in fim_answer.events)
    completion = _post(client_gateway.base_url + "/completions", fim["apiKey"], {**body, "stream": False})
    assert completion.status == 200 and completion.json()["choices"][0]["text"], completion.body
    embedding = _post(embed["apiBase"] + "/embeddings", embed["apiKey"], {"model": embed["model"], "input": ["x = 1"]})
    assert embedding.status == 200 and len(embedding.json()["data"][0]["embedding"]) == 1024, embedding.body
    rows = client_gateway.rows(wait_for=3)
    assert [(r.model, r.team) for r in rows] == [
        ("codestral", "coders"),
        ("codestral", "coders"),
        ("mistral-embed", "coders"),
    ]
    assert all(r.cost_nanos > 0 and r.status == 200 for r in rows)


def _exports(text: str) -> dict[str, str]:
    """The variables an env file exports, as a shell would read them."""
    exported = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exported[name] = shlex.split(value, comments=True)[0] if value else ""
    return exported


def test_claude_code_settings_point_at_the_messages_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    command = ["clients", "claude-code", "--model", "mistral-medium-3.5", "--key", "gw-secret", "--dir", str(tmp_path)]
    assert gateway_cli(command) == 0
    out = capsys.readouterr().out
    settings, env_file = tmp_path / ".claude" / "settings.json", tmp_path / ".claude" / "gateway.env"
    assert f"wrote {settings}" in out and "claude -p" in out
    env = json.loads(settings.read_text())["env"]
    assert env == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:4000",  # Claude Code appends /v1/messages itself
        "ANTHROPIC_AUTH_TOKEN": "gw-secret",
        "ANTHROPIC_MODEL": "mistral-medium-3.5",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "mistral-medium-3.5",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "mistral-medium-3.5",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "kimi-k2.6",  # the cheapest chat model listed
        "ANTHROPIC_SMALL_FAST_MODEL": "kimi-k2.6",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32768",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    }
    assert _exports(env_file.read_text()) == env
    for path in (settings, env_file):  # both hold the key
        assert oct(path.stat().st_mode & 0o777) == "0o600", path

    # Without a key: none written, the env file takes it from $GATEWAY_API_KEY, and the files are not secret.
    assert gateway_cli(["clients", "claude-code", "--dir", str(tmp_path / "open")]) == 0
    assert "ANTHROPIC_AUTH_TOKEN=gw-..." in capsys.readouterr().out
    env = json.loads((tmp_path / "open" / ".claude" / "settings.json").read_text())["env"]
    assert "ANTHROPIC_AUTH_TOKEN" not in env and env["ANTHROPIC_MODEL"] == "auto"
    exported = (tmp_path / "open" / ".claude" / "gateway.env").read_text()
    assert 'export ANTHROPIC_AUTH_TOKEN="$GATEWAY_API_KEY"' in exported
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "open" / ".claude" / "settings.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_claude_code_env_file_quotes_what_a_shell_would_expand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "gw-a$b c'd"  # not a real key's alphabet, but the file must survive any
    assert gateway_cli(["clients", "claude-code", "--key", key, "--dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert _exports((tmp_path / ".claude" / "gateway.env").read_text())["ANTHROPIC_AUTH_TOKEN"] == key


@pytest.mark.slow
def test_claude_code_small_model_is_the_cheapest_the_team_may_use(
    start_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --url the models are those the key's team may use: for a team kept in the EU, Kimi K2.6 (the
    cheapest otherwise) is not listed, so background requests go to Mistral Medium 3.5 too."""
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_team(db, "eu-team", "5.00", regions=["eu"])
    key, _ = make_key(db, "eu-team")
    server = start_gateway(database_url=db, master_key="master-key-for-clients-cli")
    command = ["clients", "claude-code", "--url", server.url, "--key", key, "--dir", str(tmp_path / "eu")]
    assert gateway_cli(command) == 0
    capsys.readouterr()
    env = json.loads((tmp_path / "eu" / ".claude" / "settings.json").read_text())["env"]
    assert (env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_AUTH_TOKEN"]) == (server.url, key)
    assert env["ANTHROPIC_SMALL_FAST_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "mistral-medium-3.5"
