"""Fixes from an outside security review, each reproduced against a real gateway on 127.0.0.1:

- `/metrics` on the main port needs the master key (or the metrics token) when a master key is set;
- `gateway clients` writes key files 0600 from the start and refuses symlinked targets;
- unknown policy names are refused when teams are created or updated, when a reload would remove a policy a
  team uses, and at request time (fail closed, never the default policy);
- slow or idle clients cannot hold connections: keep-alive, request-head and request-body deadlines;
- a trailing-slash path is never redirected to a Location built from the client's Host header.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.emulators import EmulatorControl
from tests.support.gateways import GATEWAY, GatewayFactory, bare_env, free_port, run_cli, wait_for_startup
from tests.support.http import auth, post_json, request
from tests.support.store import make_key, make_team

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
SHORT = [{"role": "user", "content": "hi"}]


# ------------------------------------------------------------------------------------ d. connection deadlines


def _connect(port: int, timeout: float = 20.0) -> socket.socket:
    # A generous socket timeout: the server's deadline, not this one, must end the wait.
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises socket.timeout if it never does)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _read_response(sock: socket.socket) -> bytes:
    """One response with a content-length body (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


@pytest.fixture(scope="module")
def quick(start_gateway: GatewayFactory) -> int:
    """A gateway with deadlines short enough to wait for (open: no master key, so bodies are read at once)."""
    return start_gateway(
        master_key=None, keepalive_seconds=0.6, header_timeout_seconds=0.6, body_timeout_seconds=0.8
    ).port


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(quick: int) -> None:
    with _connect(quick) as sock:
        start = time.monotonic()
        assert _read_until_eof(sock) == b""  # closed without an answer: the client never asked anything
        assert 0.5 <= time.monotonic() - start < 10


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert _read_until_eof(sock) == b""
        assert 0.5 <= time.monotonic() - start < 10


def test_a_half_sent_request_head_is_answered_408_and_closed(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.monotonic()
        answer = _read_until_eof(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in answer, answer
        assert 0.5 <= time.monotonic() - start < 10


def _trickle(sock: socket.socket, first: bytes, each: bytes) -> tuple[bytes, float]:
    """Send `first`, then `each` every 50 ms from a thread (a slow client that never stops) while reading
    what the server answers until it closes; the answer and how long that took."""
    stop = threading.Event()

    def send() -> None:
        try:
            sock.sendall(first)
            while not stop.wait(0.05):  # the slow client's pace, not synchronisation
                sock.sendall(each)
        except OSError:  # the server closed the connection
            pass

    sender = threading.Thread(target=send, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        return _read_until_eof(sock), time.monotonic() - start
    finally:
        stop.set()
        sender.join(10)


def test_a_head_trickled_line_by_line_is_cut_at_the_header_timeout(quick: int) -> None:
    """The deadline is for the whole head, not between bytes: activity does not extend it."""
    with _connect(quick) as sock:
        answer, took = _trickle(sock, b"GET /healthz HTTP/1.1\r\n", b"X-A: b\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and 0.5 <= took < 10, (answer, took)


def test_a_body_trickled_byte_by_byte_is_cut_at_the_body_timeout(quick: int) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 100000\r\n\r\n"
    )
    with _connect(quick) as sock:
        answer, took = _trickle(sock, head, b" ")
    assert answer.startswith(b"HTTP/1.1 408") and 0.7 <= took < 10, (answer, took)


def test_a_half_sent_body_is_answered_408_and_closed(quick: int) -> None:
    with _connect(quick) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"model": "auto"'
        )
        start = time.monotonic()
        answer = _read_until_eof(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"request body was not received" in answer, answer
        assert 0.7 <= time.monotonic() - start < 10


def test_a_slow_answer_is_not_cut_by_the_deadlines(quick: int, mistral_log: EmulatorControl) -> None:
    """The deadlines are for reading the request: the provider may take longer than all of them."""
    mistral_log.fault("latency=1500")
    answer = post_json(f"http://127.0.0.1:{quick}", CHAT, {"model": "mistral-medium-3.5", "messages": SHORT})
    assert answer.status == 200, answer.body


@pytest.fixture()
def served(tmp_path: Path, mistral: object, moonshot: object) -> Iterator[int]:
    """`gateway serve` as a subprocess, with short deadlines from GATEWAY_* settings."""
    port = free_port()
    env = bare_env(
        GATEWAY_DATA_DIR=str(tmp_path),
        GATEWAY_KEEPALIVE_SECONDS="0.7",
        GATEWAY_HEADER_TIMEOUT_SECONDS="0.7",
        GATEWAY_BODY_TIMEOUT_SECONDS="0.7",
        GATEWAY_REQUEST_LOG="false",
    )
    process = subprocess.Popen(
        [*GATEWAY, "serve", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        wait_for_startup(process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_gateway_serve_applies_the_deadlines_from_its_settings(served: int) -> None:
    with _connect(served) as idle, _connect(served) as half_head, _connect(served) as half_body:
        half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        half_body.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n{"
        )
        assert _read_until_eof(idle) == b""
        assert _read_until_eof(half_head).startswith(b"HTTP/1.1 408")
        assert _read_until_eof(half_body).startswith(b"HTTP/1.1 408")
    with _connect(served) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(kept).startswith(b"HTTP/1.1 200")
        assert _read_until_eof(kept) == b""


# ------------------------------------------------------------------------------------ c. unknown policy names

MASTER = "mk-hardening"


def _policies_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    for name in ("default.yaml", "eu-only.yaml", "cost-saver.yaml"):
        (directory / name).write_text((ROOT / "policies" / name).read_text())
    return directory


def test_an_unknown_policy_name_is_refused_on_create_and_update(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    url = start_gateway(
        master_key=MASTER, database_url=f"sqlite:///{tmp_path / 'p.db'}", policies_dir=_policies_copy(tmp_path)
    ).url
    refused = post_json(url, "/admin/teams", {"name": "web", "policy": "eu_only"}, auth(MASTER))
    assert refused.status == 400 and refused.error["param"] == "policy" and refused.error["code"] == "unknown_policy"
    assert "'eu_only'" in refused.error["message"] and "eu-only" in refused.error["message"]  # lists the known ones
    assert request(url, "GET", "/admin/teams/web", headers=auth(MASTER)).status == 404  # nothing was created

    assert post_json(url, "/admin/teams", {"name": "web", "policy": "eu-only"}, auth(MASTER)).status == 201
    patch = {"content-type": "application/json", **auth(MASTER)}
    refused = request(url, "PATCH", "/admin/teams/web", b'{"policy": "eu_only"}', patch)
    assert refused.status == 400 and refused.error["param"] == "policy"
    assert request(url, "GET", "/admin/teams/web", headers=auth(MASTER)).json()["policy"] == "eu-only"
    assert (
        request(url, "PATCH", "/admin/teams/web", b'{"policy": "cost-saver"}', patch).json()["policy"] == "cost-saver"
    )


def test_the_admin_cli_refuses_an_unknown_policy(tmp_path: Path) -> None:
    env = bare_env(GATEWAY_POLICIES_DIR=str(_policies_copy(tmp_path)), GATEWAY_DATA_DIR=str(tmp_path))
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--database-url", db, env=env)

    refused = gateway("teams", "create", "web", "--policy", "eu_only")
    assert refused.returncode == 2 and "unknown policy 'eu_only'" in refused.stderr and "eu-only" in refused.stderr, (
        refused.stderr
    )
    assert gateway("teams", "show", "web").returncode != 0  # not created
    assert gateway("teams", "create", "web", "--policy", "eu-only").returncode == 0
    refused = gateway("teams", "update", "web", "--policy", "eu_only")
    assert refused.returncode == 2 and "unknown policy 'eu_only'" in refused.stderr, refused.stderr
    assert "eu-only" in gateway("teams", "show", "web", "--format", "json").stdout


def test_a_reload_that_removes_a_policy_in_use_keeps_the_previous_policies(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    directory = _policies_copy(tmp_path)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    url = start_gateway(master_key=MASTER, database_url=db, policies_dir=directory).url
    assert post_json(url, "/admin/teams", {"name": "eu-team", "policy": "eu-only"}, auth(MASTER)).status == 201
    key = post_json(url, "/admin/keys", {"team": "eu-team"}, auth(MASTER)).json()["key"]

    original = (directory / "eu-only.yaml").read_text()
    (directory / "eu-only-v2.yaml").write_text(original.replace("name: eu-only", "name: eu-only-v2"))
    (directory / "eu-only.yaml").unlink()  # renamed to eu-only-v2: the name the team uses is gone
    answer = post_json(url, "/admin/reload", {}, auth(MASTER))
    assert answer.status == 422, answer.body
    assert any("'eu-only'" in p and "eu-team" in p for p in answer.json()["problems"]), answer.json()
    ready = request(url, "GET", "/readyz").json()
    assert "eu-team" in ready["policies"]["last_error"] and "eu-only" in ready["policies"]["names"]
    metrics = request(url, "GET", "/metrics", headers=auth(MASTER)).body.decode()
    assert 'gateway_config_reloads_total{result="failure"} 1.0' in metrics
    # The team is still routed by its policy: EU only, even when it names Kimi (in cn).
    routed = post_json(url, CHAT, {"model": "auto", "messages": SHORT}, auth(key))
    assert routed.status == 200 and routed.headers["x-gateway-region"] == "eu"

    # Moving the team first makes the same edit acceptable.
    patch = {"content-type": "application/json", **auth(MASTER)}
    assert (
        request(url, "PATCH", "/admin/teams/eu-team", b'{"policy": "eu-only-v2"}', patch).status == 400
    )  # not loaded yet
    (directory / "eu-only.yaml").write_text(original)  # both names defined for the move
    assert post_json(url, "/admin/reload", {}, auth(MASTER)).status == 200
    assert request(url, "PATCH", "/admin/teams/eu-team", b'{"policy": "eu-only-v2"}', patch).status == 200
    (directory / "eu-only.yaml").unlink()
    assert post_json(url, "/admin/reload", {}, auth(MASTER)).status == 200


def test_the_file_watcher_also_refuses_to_remove_a_policy_in_use(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    directory = _policies_copy(tmp_path)
    db = f"sqlite:///{tmp_path / 'w.db'}"
    make_team(db, "eu-team", None, policy="eu-only")
    server = start_gateway(master_key=MASTER, database_url=db, policies_dir=directory, reload_poll_seconds=0.1)
    (directory / "eu-only.yaml").unlink()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the watcher's next check (every 0.1 s): poll the outcome with a deadline
        ready = request(server.url, "GET", "/readyz").json()
        if ready["policies"]["last_error"]:
            break
        threading.Event().wait(0.05)
    assert "eu-team" in (ready["policies"]["last_error"] or ""), ready
    assert "eu-only" in ready["policies"]["names"] and ready["policies"]["reloads"]["failure"] >= 1


def test_a_team_whose_policy_is_unknown_fails_closed(
    start_gateway: GatewayFactory, tmp_path: Path, moonshot_log: EmulatorControl, mistral_log: EmulatorControl
) -> None:
    """A team row written before names were checked (or by a node with other policies): its requests are
    refused, never routed with the default policy (which would let an `eu_only` team reach Kimi in cn)."""
    db = f"sqlite:///{tmp_path / 'f.db'}"
    make_team(db, "typo", None, policy="eu_only")
    key, _ = make_key(db, "typo")
    url = start_gateway(master_key=MASTER, database_url=db, policies_dir=_policies_copy(tmp_path)).url
    for model in ("auto", "kimi-k2.6"):
        refused = post_json(url, CHAT, {"model": model, "messages": SHORT}, auth(key))
        assert refused.status == 503 and refused.error["code"] == "policy_not_found", refused.body
        assert "'eu_only'" in refused.error["message"]
    explained = post_json(url, "/v1/route/explain", {"model": "auto", "messages": SHORT}, auth(key))
    assert explained.status == 503 and explained.error["code"] == "policy_not_found"
    assert moonshot_log.requests() == [] and mistral_log.requests() == []


# ------------------------------------------------------------------------------------ e. trailing slashes


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v1/models/", None),
        ("POST", "/v1/chat/completions/", b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'),
        ("GET", "/admin/teams/", None),
        ("GET", "/healthz/", None),
        ("GET", "/readyz//", None),
        ("GET", "/metrics/", None),
        ("GET", "/no/such/path/", None),
    ],
)
def test_a_trailing_slash_is_never_redirected_to_the_host_header(
    start_gateway: GatewayFactory, method: str, path: str, body: bytes | None
) -> None:
    url = _slash_gateway(start_gateway)
    hostile = {"host": "evil.example", "content-type": "application/json"}
    for headers in (hostile, {**hostile, **auth(MASTER)}):
        answer = request(url, method, path, body, headers)
        assert "location" not in answer.headers and not 300 <= answer.status < 400, (
            path,
            answer.status,
            answer.headers,
        )
        assert b"evil.example" not in answer.body
    # With the master key, the path without its slash is what answers.
    answer = request(url, method, path, body, {**hostile, **auth(MASTER)})
    expected = request(url, method, path.rstrip("/"), body, {"content-type": "application/json", **auth(MASTER)})
    assert answer.status == expected.status, (path, answer.body, expected.body)


_SLASH: dict[str, str] = {}


def _slash_gateway(start_gateway: GatewayFactory) -> str:
    if "url" not in _SLASH:
        _SLASH["url"] = start_gateway(master_key=MASTER).url
    return _SLASH["url"]


# ------------------------------------------------------------------------------------ b. key files of `gateway clients`


def _clients(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway clients ...` as a user with the usual umask 022 would run it, against a real gateway."""
    return subprocess.run(
        [*GATEWAY, "clients", *args, "--url", url, "--key", MASTER],
        capture_output=True,
        text=True,
        env=bare_env(),
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.mark.parametrize("tool, name", [("opencode", "opencode.json"), ("continue", "config.yaml"), ("vibe", ".env")])
def test_key_files_are_written_0600_under_umask_022(
    start_gateway: GatewayFactory, tmp_path: Path, tool: str, name: str
) -> None:
    url = _slash_gateway(start_gateway)
    result = _clients(url, tool, "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = tmp_path / name
    assert MASTER in written.read_text()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []  # no temporary left behind
    # Replaced with --force: still 0600 (a new file, never widened).
    written.write_text("old")
    written.chmod(0o644)
    assert _clients(url, tool, "--dir", str(tmp_path), "--force").returncode == 0
    assert stat.S_IMODE(written.stat().st_mode) == 0o600 and MASTER in written.read_text()


def test_a_key_file_is_never_created_readable_by_others(
    start_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file the key is written into is created 0600 (exclusive, not through a link): there is no moment
    at which the key sits in a file others may read, as there was with write-then-chmod."""
    from gateway.cli.main import main

    url = _slash_gateway(start_gateway)
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def recording_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777, *args: object, **kw: object) -> int:
        if str(path).startswith(str(tmp_path)):
            created.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    old = os.umask(0o022)
    try:
        assert main(["clients", "opencode", "--url", url, "--key", MASTER, "--dir", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    assert created, "the key file was not created through os.open"
    for path, flags, mode in created:
        assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW, path
        assert mode == 0o600, (path, oct(mode))
    assert stat.S_IMODE((tmp_path / "opencode.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("force", [False, True])
def test_a_symlinked_target_is_refused_and_its_destination_untouched(
    start_gateway: GatewayFactory, tmp_path: Path, force: bool
) -> None:
    url = _slash_gateway(start_gateway)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    out = tmp_path / "out"
    out.mkdir()
    (out / "opencode.json").symlink_to(victim)
    result = _clients(url, "opencode", "--dir", str(out), *(["--force"] if force else []))
    assert result.returncode == 1 and "symbolic link" in result.stderr, result.stderr
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert (out / "opencode.json").is_symlink() and sorted(p.name for p in out.iterdir()) == ["opencode.json"]
