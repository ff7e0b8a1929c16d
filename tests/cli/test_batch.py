"""`gateway batch ...` (gateway/cli/batch.py): options, the multipart upload's bytes and the rendering of canned
gateway answers (fast); then the commands end to end against a real gateway whose providers are the emulators (slow).
"""

from __future__ import annotations

import argparse
import email.parser
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.batches.render import batch_object
from gateway.cli.batch import (
    ApiError,
    BatchCliError,
    api_error,
    client_for,
    metadata_pairs,
    multipart_parts,
    render_batch,
    render_explained,
    render_list,
    render_plan,
    result_file,
    saving,
)
from gateway.cli.main import build_parser, main
from gateway.store.batches import BatchRecord
from tests.support.gateways import free_port

# -- options ---------------------------------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_submit_options_and_their_defaults() -> None:
    args = parse("batch", "submit", "in.jsonl")
    assert (args.file, args.window, args.endpoint, args.metadata) == ("in.jsonl", "24h", "/v1/chat/completions", [])
    assert (args.url, args.key, args.team, args.json) == (None, None, None, False)
    args = parse(
        "batch", "submit", "in.jsonl", "--team", "web", "--window", "12h", "--endpoint", "/v1/embeddings",
        "--metadata", "a=1", "b=x=y", "--metadata", "c=", "--json", "--url", "http://gw:9", "--key", "sk-1",
    )  # fmt: skip
    assert (args.team, args.window, args.endpoint, args.json) == ("web", "12h", "/v1/embeddings", True)
    assert metadata_pairs(args.metadata) == {"a": "1", "b": "x=y", "c": ""}
    assert (args.url, args.key) == ("http://gw:9", "sk-1")


@pytest.mark.parametrize(
    "argv",
    [
        ("batch", "submit", "in.jsonl", "--endpoint", "/v1/completions"),
        ("batch", "submit"),
        ("batch", "list", "--limit", "0"),
        ("batch", "list", "--limit", "101"),
        ("batch", "show"),
        ("batch", "frobnicate"),
    ],
)
def test_bad_usage_exits_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert "usage: gateway batch" in capsys.readouterr().err


def test_every_action_parses() -> None:
    assert parse("batch", "explain", "f", "--metadata", "k=v").metadata == ["k=v"]
    assert (parse("batch", "list").limit, parse("batch", "list", "--limit", "5", "--after", "batch_1").after) == (
        20,
        "batch_1",
    )
    assert parse("batch", "show", "batch_1").id == "batch_1"
    assert parse("batch", "cancel", "batch_1").id == "batch_1"
    args = parse("batch", "results", "batch_1", "--errors", "-o", "out.jsonl")
    assert (args.id, args.errors, args.output) == ("batch_1", True, "out.jsonl")
    assert parse("batch", "results", "batch_1").output is None


def test_bad_metadata_is_bad_usage_found_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    # (nothing listens at this URL: reaching it would exit 2 too, but with "cannot reach")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["batch", "submit", str(source), "--url", url, "--metadata", "novalue"]) == 2
    assert "--metadata wants KEY=VALUE pairs, not 'novalue'" in capsys.readouterr().err
    assert main(["batch", "explain", str(tmp_path / "missing.jsonl"), "--url", url]) == 2
    assert "no such file" in capsys.readouterr().err


def Args(url: str | None = None, key: str | None = None, team: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(url=url, key=key, team=team)


def test_the_url_and_key_from_options_then_environment() -> None:
    env = {"GATEWAY_API_KEY": "team-key", "GATEWAY_MASTER_KEY": "master"}
    client = client_for(Args(), env)
    assert (client.url, client.key, client.team) == ("http://127.0.0.1:4000", "team-key", None)
    # Acting for a team needs the master key: it comes first then.
    assert client_for(Args(team="web"), env).key == "master"
    assert client_for(Args(team="web"), {"GATEWAY_API_KEY": "team-key"}).key == "team-key"
    assert client_for(Args(), {"GATEWAY_MASTER_KEY": "master"}).key == "master"
    assert client_for(Args(key="given"), env).key == "given"
    assert client_for(Args(), {}).key is None  # an open gateway needs none; one that does says 401
    assert client_for(Args(), {"GATEWAY_URL": "http://gw:8/"}).url == "http://gw:8"
    assert client_for(Args(url="https://a"), {"GATEWAY_URL": "http://gw:8"}).url == "https://a"
    with pytest.raises(BatchCliError) as refused:
        client_for(Args(url="gw:8"), {})
    assert refused.value.exit_code == 2


def test_an_unreachable_gateway_is_named_exit_2_and_the_key_is_never_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["batch", "list", "--url", url, "--key", "sk-secret-123"]) == 2
    out = capsys.readouterr()
    assert f"cannot reach the gateway at {url}" in out.err
    assert "sk-secret-123" not in out.err + out.out


# -- the upload's bytes -------------------------------------------------------------------------------------------


def test_the_multipart_form_is_what_a_form_parser_reads() -> None:
    head, tail = multipart_parts('we"ird\\name\r\n.jsonl', {"purpose": "batch"}, "b0undary")
    content = b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    raw = b"Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n" + head + content + tail
    message = email.parser.BytesParser().parsebytes(raw)
    payload = message.get_payload()
    assert isinstance(payload, list)
    parts: dict[Any, Message] = {
        part.get_param("name", header="content-disposition"): part for part in payload if isinstance(part, Message)
    }
    assert parts["purpose"].get_payload() == "batch"
    upload = parts["file"]
    assert upload.get_filename() == 'we"ird\\name  .jsonl'
    assert upload.get_payload(decode=True) == content


# -- rendering --------------------------------------------------------------------------------------------------

PLAN: dict[str, Any] = {
    "lines": 5,
    "valid_lines": 3,
    "invalid_lines": 2,
    "errors": {"invalid_json": 1, "no_route": 1},
    "models": [
        {
            "model": "mistral-medium-3.5",
            "provider": "mistral",
            "region": "eu",
            "lines": 2,
            "batch_api_lines": 2,
            "interactive_lines": 0,
            "estimated_cost_usd": "0.000500000",
            "estimated_interactive_cost_usd": "0.001000000",
            "reserved_usd": "0.020000000",
        },
        {
            "model": "local-llama",
            "provider": "local",
            "region": "eu",
            "lines": 1,
            "batch_api_lines": 0,
            "interactive_lines": 1,
            "estimated_cost_usd": "0.000250000",
            "estimated_interactive_cost_usd": "0.000250000",
            "reserved_usd": "0.010000000",
        },
    ],
    "estimated_cost_usd": "0.000750000",
    "estimated_interactive_cost_usd": "0.001250000",
    "estimated_saving_usd": "0.000500000",
    "reserved_usd": "0.030000000",
    "budget_left_usd": "4.200000000",
    "budget_steps": ["cheaper_model"],
    "window_hours": 24,
    "residency": ["eu"],
}


def test_the_plan_has_a_row_per_model_a_total_the_errors_and_the_saving() -> None:
    text = render_plan(PLAN)
    lines = text.splitlines()
    assert lines[0] == "5 lines: 3 valid, 2 invalid; window 24h; residency eu"
    header = next(line for line in lines if line.startswith("MODEL"))
    assert header.split() == [
        "MODEL", "PROVIDER", "REGION", "LINES", "BATCH", "API", "INTERACTIVE", "EST.", "COST", "AT", "INTERACTIVE",
    ]  # fmt: skip
    assert next(line for line in lines if line.startswith("mistral-medium-3.5")).split() == [
        "mistral-medium-3.5", "mistral", "eu", "2", "2", "0", "$0.0005", "$0.001",
    ]  # fmt: skip
    assert next(line for line in lines if line.startswith("local-llama")).split()[3:] == [
        "1", "0", "1", "$0.00025", "$0.00025",
    ]  # fmt: skip
    assert next(line for line in lines if line.startswith("TOTAL")).split() == [
        "TOTAL", "3", "2", "1", "$0.00075", "$0.00125",
    ]  # fmt: skip
    assert "invalid lines by error: invalid_json 1, no_route 1" in lines
    assert "estimated cost $0.00075 at batch prices, $0.00125 at interactive prices: saves $0.0005 (40%)" in lines
    assert lines[-1] == "reserved $0.03 (the worst case; the budget had $4.20 left; to fit it: cheaper_model)"


def test_one_model_has_no_total_row_and_no_budget_says_nothing_of_it() -> None:
    plan = {**PLAN, "models": PLAN["models"][:1], "errors": {}, "budget_left_usd": None, "budget_steps": []}
    plan["residency"] = None
    text = render_plan(plan)
    assert "TOTAL" not in text and "invalid lines" not in text
    assert "residency any" in text
    assert text.splitlines()[-1] == "reserved $0.03 (the worst case)"


def test_saving_is_an_amount_and_a_share_of_the_interactive_cost() -> None:
    assert saving("0.001000000", "0.000500000") == "$0.0005 (50%)"
    assert saving("3.000000000", "2.000000000") == "$1.00 (33.3%)"
    assert saving("0.000000000", "0.000000000") == "$0.00"
    assert saving("1.000000000", "1.000000000") == "$0.00 (0%)"
    assert saving(None, "1.000000000") == "-"


def test_explain_says_admitted_or_the_refusal() -> None:
    admitted = render_explained({**PLAN, "team": "web", "admitted": True})
    assert admitted.splitlines()[0] == "team web"
    assert admitted.splitlines()[-1].startswith("-> admitted")
    refusal = {"status": 429, "code": "budget_exceeded", "message": "Budget exceeded for team 'web': ..."}
    refused = render_explained({**PLAN, "team": "web", "admitted": False, "refusal": refusal})
    assert refused.splitlines()[-1] == "-> refused: 429 budget_exceeded: Budget exceeded for team 'web': ..."


CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z


def batch(status: str = "completed", completed: int = 2, failed: int = 1, **fields: Any) -> dict[str, Any]:
    """The batch object the gateway renders (gateway.batches.render.batch_object), not a copy of its shape."""
    record = BatchRecord(
        id="batch_abc",
        team="web",
        key_id=None,
        key_prefix=None,
        input_file_id="file-in",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        status=status,
        created_at=CREATED,
        expires_at=CREATED + 86400,
        total=3,
        completed=completed,
        failed=failed,
        reserved_nanos=30_000_000,
        plan=PLAN,
        **fields,
    )
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "cached_tokens": 100,
        "cost_nanos": 600_000,
        "list_cost_nanos": 1_200_000,
    }
    return batch_object(record, completed > 0, failed > 0, usage)


def test_show_prints_the_moments_counts_plan_and_what_the_batch_saved() -> None:
    shown = batch(in_progress_at=CREATED + 5, completed_at=CREATED + 65, metadata={"job": "nightly"})
    text = render_batch(shown)
    lines = text.splitlines()
    assert lines[0] == "batch_abc"
    assert "status       completed" in lines
    assert "created      2026-01-01T00:00:00Z" in lines
    assert "in progress  2026-01-01T00:00:05Z" in lines
    assert "completed    2026-01-01T00:01:05Z" in lines
    assert "expires      2026-01-02T00:00:00Z" in lines
    assert "finalizing" not in text  # (unset moments are left out)
    assert "requests     3 total: 2 completed, 1 failed" in lines
    assert "tokens       1,200 input (100 cached), 300 output" in lines
    assert "metadata     job=nightly" in lines
    assert f"output file  {shown['output_file_id']}  (gateway batch results batch_abc)" in lines
    assert f"error file   {shown['error_file_id']}  (gateway batch results batch_abc --errors)" in lines
    assert "plan (estimated when it was created):" in lines
    assert "cost         $0.0006 at batch prices (in all)" in lines
    assert "interactive  $0.0012 for the same usage at interactive prices" in lines
    assert "saved        $0.0006 (50%)" in lines
    assert "reserved     $0.03" in lines


def test_show_of_a_running_batch_says_so_far_and_prints_its_errors() -> None:
    running = batch(status="in_progress", completed=0, failed=0, in_progress_at=CREATED + 5)
    running["errors"] = {"object": "list", "data": [{"code": "x", "message": "bad", "line": 3}]}
    text = render_batch(running)
    assert "at batch prices (so far)" in text
    assert "output file" not in text and "error file" not in text
    assert "error (line 3): bad (x)" in text.splitlines()


def test_list_has_a_row_per_batch_and_the_next_page() -> None:
    listing = {
        "object": "list",
        "data": [batch(), batch(status="in_progress", completed=0, failed=0) | {"id": "batch_def"}],
        "first_id": "batch_abc",
        "last_id": "batch_def",
        "has_more": True,
    }
    lines = render_list(listing).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ENDPOINT", "CREATED", "COMPLETED/FAILED/TOTAL", "COST", "SAVED"]
    assert lines[1].split() == [
        "batch_abc", "completed", "/v1/chat/completions", "2026-01-01T00:00:00Z", "2/1/3", "$0.0006", "$0.0006",
    ]  # fmt: skip
    assert lines[2].split()[:2] == ["batch_def", "in_progress"]
    assert lines[-1] == "more: gateway batch list --after batch_def"
    assert render_list({"data": [], "has_more": False}) == "no batches"


def test_results_need_a_finished_batch_with_that_file() -> None:
    assert result_file(batch(), errors=False).startswith("file-batch_out_")
    assert result_file(batch(), errors=True).startswith("file-batch_err_")
    with pytest.raises(BatchCliError) as unfinished:
        result_file(batch(status="in_progress", completed=1, failed=0), errors=False)
    assert unfinished.value.exit_code == 1
    assert str(unfinished.value) == (
        "batch batch_abc has not finished (status in_progress, 1 completed and 0 failed of 3): no output file yet"
    )
    with pytest.raises(BatchCliError) as nothing_answered:
        result_file(batch(completed=0, failed=3), errors=False)
    assert "ended completed with no output file; its failed lines: gateway batch results batch_abc --errors" in str(
        nothing_answered.value
    )


def test_the_gateways_errors_are_its_message_and_code() -> None:
    raw = orjson.dumps(
        {"error": {"message": "Budget exceeded.", "type": "insufficient_quota", "code": "budget_exceeded"}}
    )
    error = api_error(429, raw)
    assert (str(error), error.exit_code, error.status) == ("error: Budget exceeded. (budget_exceeded)", 1, 429)
    assert str(api_error(404, orjson.dumps({"error": {"message": "gone", "code": None}}))) == "error: gone (HTTP 404)"
    assert str(api_error(502, b"<html>Bad gateway</html>")) == "error: <html>Bad gateway</html> (HTTP 502)"
    assert isinstance(error, ApiError)


# -- end to end: a real gateway, its providers the emulators ------------------------------------------------------

MASTER = "master-key-for-batch-cli-tests"


def chat_line(custom_id: str, model: str | None, text: str = "Say hi.") -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "max_tokens": 16}
    if model is not None:
        body["model"] = model
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


@pytest.fixture()
def emulated_batches(mistral: Any, moonshot: Any) -> Iterator[None]:
    """The emulators' batch jobs forgotten, and their settings back to the defaults, before and after."""
    from tests.support.http import request

    def reset() -> None:
        for server in (mistral, moonshot):
            assert request(server.url, "DELETE", "/_emulator/batches", None, {}, timeout=10).status < 400

    reset()
    yield
    reset()


class Gateway:
    """A gateway on its own SQLite database, with team `web` ($5) and a key of it, driven through `main([...])`."""

    def __init__(self, start_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        from tests.support.store import make_key, make_team

        self.db = f"sqlite:///{tmp_path / 'gateway.db'}"
        make_team(self.db, "web", "5.00")
        make_team(self.db, "poor", "0.000001")
        self.key, _ = make_key(self.db, "web")
        self.server = start_gateway(database_url=self.db, master_key=MASTER, batch_poll_seconds=0.05, request_log=False)
        self.url = self.server.url
        self.capsys = capsys

    def run(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        """`gateway batch ARGV --url URL --key KEY`: (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        code = main(["batch", *argv, "--url", self.url, "--key", key or self.key])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def show(self, batch_id: str) -> dict[str, Any]:
        code, out, err = self.run("show", batch_id, "--json")
        assert code == 0, err
        shown: dict[str, Any] = orjson.loads(out)
        return shown

    def ended(self, batch_id: str, seconds: float = 30.0) -> dict[str, Any]:
        from tests.support.waiting import wait_until

        return wait_until(
            lambda: (b := self.show(batch_id))["status"] in ("completed", "failed", "expired", "cancelled") and b,
            seconds,
            f"batch {batch_id} ended",
        )


@pytest.fixture()
def gw(
    start_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], emulated_batches: None
) -> Iterator[Gateway]:
    gateway = Gateway(start_gateway, tmp_path, capsys)
    yield gateway
    gateway.server.stop()  # (before the emulators forget its jobs: it would poll them on)


@pytest.mark.slow
def test_submit_show_results_list_end_to_end(gw: Gateway, tmp_path: Path) -> None:
    source = jsonl(
        tmp_path / "in.jsonl",
        [
            chat_line("m", "mistral-medium-3.5"),
            chat_line("k", "kimi-k2.6"),
            chat_line("any", "auto"),
            b"not json",
        ],
    )
    code, out, err = gw.run("submit", str(source), "--metadata", "job=nightly")
    assert code == 0, err
    first = out.splitlines()[0].split()
    batch_id = first[0]
    assert batch_id.startswith("batch_") and first[1] in ("validating", "in_progress")
    assert "4 lines: 3 valid, 1 invalid; window 24h" in out, out
    assert "mistral-medium-3.5" in out and "kimi-k2.6" in out
    assert "at batch prices" in out and "at interactive prices: saves $" in out
    assert f"follow it: gateway batch show {batch_id}" in out

    ended = gw.ended(batch_id)
    assert ended["status"] == "completed", ended
    assert ended["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert ended["metadata"] == {"job": "nightly"}
    extra = ended["x_gateway"]
    # At batch prices (mistral-medium-3.5's batch_discount in the built-in catalog) the lines cost less.
    assert 0 < nanos_of(extra["cost_usd"]) < nanos_of(extra["interactive_cost_usd"])

    code, out, err = gw.run("show", batch_id)
    assert code == 0, err
    lines = out.splitlines()
    assert "status       completed" in lines
    assert "requests     4 total: 3 completed, 1 failed" in lines
    saved, full = nanos_of(extra["saved_usd"]), nanos_of(extra["interactive_cost_usd"])
    assert saved == full - nanos_of(extra["cost_usd"])
    share = round(saved * 100 / full, 1)
    assert f"saved        ${_plain(extra['saved_usd'])} ({share:g}%)" in lines
    assert f"cost         ${_plain(extra['cost_usd'])} at batch prices (in all)" in lines

    code, out, err = gw.run("results", batch_id)
    assert code == 0, err
    answered = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(item["custom_id"] for item in answered) == ["any", "k", "m"]
    assert all(item["response"]["status_code"] == 200 for item in answered)
    # The `gateway` command as users run it, the gateway and the key from the environment: the same bytes.
    from tests.support.gateways import clean_env, run_cli

    ran = run_cli("batch", "results", batch_id, env=clean_env(GATEWAY_URL=gw.url, GATEWAY_API_KEY=gw.key))
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, out, "")
    target = tmp_path / "errors.jsonl"
    code, _, err = gw.run("results", batch_id, "--errors", "-o", str(target))
    assert code == 0, err
    assert f"to {target}" in err
    failed = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    assert len(failed) == 1 and failed[0]["response"]["status_code"] == 400
    assert not (tmp_path / "errors.jsonl.part").exists()

    code, out, err = gw.run("list", "--limit", "5")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(batch_id)).split()
    assert row[1:3] == ["completed", "/v1/chat/completions"] and row[4] == "3/1/4"
    code, out, _ = gw.run("list", "--json")
    assert [b["id"] for b in orjson.loads(out)["data"]] == [batch_id]


def nanos_of(text: str) -> int:
    from gateway.cli.batch import nanos

    value = nanos(text)
    assert value is not None
    return value


def _plain(text: str) -> str:
    from gateway.cli.batch import money

    return money(text).removeprefix("$")


@pytest.mark.slow
def test_explain_creates_nothing_and_leaves_no_file(gw: Gateway, tmp_path: Path) -> None:
    from tests.support.http import request

    source = jsonl(tmp_path / "in.jsonl", [chat_line("m", "mistral-medium-3.5"), chat_line("x", "no-such-model")])
    code, out, err = gw.run("explain", str(source))
    assert code == 0, err
    assert out.splitlines()[0] == "team web"
    assert "2 lines: 1 valid, 1 invalid" in out
    assert out.splitlines()[-1].startswith("-> admitted")
    code, out, _ = gw.run("list")
    assert (code, out.strip()) == (0, "no batches")
    files = request(gw.url, "GET", "/v1/files", None, {"authorization": f"Bearer {gw.key}"}, timeout=10)
    assert files.status == 200 and files.json()["data"] == []


@pytest.mark.slow
def test_a_budget_refusal_is_the_gateways_message_and_exit_1(gw: Gateway, tmp_path: Path) -> None:
    from tests.support.http import request

    source = jsonl(tmp_path / "in.jsonl", [chat_line("m", "mistral-medium-3.5")])
    # The master key acting for team `poor` (a millionth of a dollar): its budget is that team's.
    code, out, err = gw.run("explain", str(source), "--team", "poor", key=MASTER)
    assert code == 1, err
    assert out.splitlines()[0] == "team poor"
    assert out.splitlines()[-1].startswith("-> refused: 429 budget_exceeded: Budget exceeded for team 'poor'")
    code, out, err = gw.run("submit", str(source), "--team", "poor", key=MASTER)
    assert (code, out) == (1, "")
    assert err.startswith("gateway: error: Budget exceeded for team 'poor'") and err.rstrip().endswith(
        "(budget_exceeded)"
    )
    assert MASTER not in err
    # The refused batch's upload was deleted.
    listed = request(gw.url, "GET", "/v1/files", None, {"authorization": f"Bearer {MASTER}"}, timeout=10)
    assert listed.status == 200 and listed.json()["data"] == []
    # A team key cannot act for another team.
    code, _, err = gw.run("list", "--team", "poor")
    assert code == 1 and "(forbidden)" in err


def emulated_jobs(emulator: Any, state: str) -> list[dict[str, Any]]:
    from tests.support.http import request

    jobs = request(emulator.url, "GET", "/_emulator/batches", None, {}, timeout=10).json()
    return [job for job in jobs if job["state"] == state]


@pytest.mark.slow
def test_results_before_the_end_then_cancel(gw: Gateway, tmp_path: Path, mistral: Any) -> None:
    from tests.support.http import post_json
    from tests.support.waiting import wait_until

    held = post_json(mistral.url, "/_emulator/batches", {"batch_hold": True})
    assert held.status < 400
    source = jsonl(tmp_path / "in.jsonl", [chat_line("m", "mistral-medium-3.5"), chat_line("n", "mistral-medium-3.5")])
    code, out, err = gw.run("submit", str(source))
    assert code == 0, err
    batch_id = out.split()[0]
    code, out, err = gw.run("results", batch_id)
    assert (code, out) == (1, "")
    assert f"batch {batch_id} has not finished (status " in err and "no output file yet" in err
    code, out, err = gw.run("cancel", batch_id)
    assert code == 0, err
    assert out.split()[:2] in ([batch_id, "cancelling"], [batch_id, "cancelled"])
    # The gateway asks the provider to cancel its job; the emulator holds it there until let go.
    job = wait_until(lambda: next(iter(emulated_jobs(mistral, "cancelling")), None), what="the job's cancel")
    assert post_json(mistral.url, f"/_emulator/batches/{job['id']}", {"action": "run"}).status < 400
    ended = gw.ended(batch_id)
    assert ended["status"] == "cancelled"
    code, out, err = gw.run("results", batch_id, "--errors")
    assert code == 0, err
    codes = {orjson.loads(line)["error"]["code"] for line in out.splitlines()}
    assert codes == {"batch_cancelled"}


@pytest.mark.slow
def test_unknown_batch_and_bad_window_are_the_gateways_errors(gw: Gateway, tmp_path: Path) -> None:
    code, _, err = gw.run("show", "batch_nope")
    assert code == 1 and err.strip() == "gateway: error: No such Batch object: batch_nope (batch_not_found)"
    source = jsonl(tmp_path / "in.jsonl", [chat_line("m", "mistral-medium-3.5")])
    code, _, err = gw.run("submit", str(source), "--window", "9w")
    assert code == 1 and "(invalid_value)" in err and "completion_window" in err
    code, _, err = gw.run("list", key="sk-wrong")
    assert code == 1 and "sk-wrong" not in err


@pytest.mark.slow
@pytest.mark.parametrize("size", [64 * 1024, 16 * 1024 * 1024])
def test_a_file_over_the_gateways_limit_is_refused(
    start_gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], size: int
) -> None:
    from tests.support.store import make_team

    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    make_team(db, "web")
    server = start_gateway(database_url=db, master_key=MASTER, batch_file_max_bytes=1024, request_log=False)
    source = tmp_path / "big.jsonl"
    line = orjson.dumps(chat_line("x", "mistral-medium-3.5", "word " * 100)) + b"\n"
    source.write_bytes(line * (size // len(line) + 1))
    try:
        code = main(["batch", "submit", str(source), "--url", server.url, "--key", MASTER, "--team", "web"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 1, err
    # The gateway refuses by the declared length before reading the file: its 413 arrives whole while the file is
    # small enough to sit in the sockets' buffers, else the connection it closes is all the client sees.
    assert err.startswith("gateway: ") and "GATEWAY_BATCH_FILE_MAX_BYTES" in err, err
    assert "(file_too_large)" in err or "closed the connection while" in err, err
    assert MASTER not in err
