"""`gateway batch submit|explain|list|show|cancel|results`: batches on a running gateway, over its HTTP API.

The endpoints are OpenAI's files and batches endpoints (gateway/http/batches.py): `POST /v1/files` (multipart, `file`
and `purpose=batch`), `POST /v1/batches`, `POST /v1/batches/explain` (the plan, nothing created), `GET /v1/batches`,
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`.
The gateway is `--url`, else GATEWAY_URL, else http://127.0.0.1:4000. The key is `--key`, else GATEWAY_API_KEY (a
team's key), else GATEWAY_MASTER_KEY; with `--team` the master key acts for that team (`x-gateway-team`), so
GATEWAY_MASTER_KEY is preferred to GATEWAY_API_KEY then. The key is sent, never printed.

Exit codes: 0 success, 1 the gateway refused or failed (its OpenAI-style error is printed: `error: MESSAGE (code)`),
or a batch has no results yet; 2 bad usage, or the gateway cannot be reached.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import orjson

from gateway.cli.tables import table, usd
from gateway.money import NANOS_PER_USD

DEFAULT_URL = "http://127.0.0.1:4000"
TEAM_HEADER = "x-gateway-team"  # (gateway/http/batches.py: the master key acting for a team)
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")  # what a batch may run (gateway/batches/lines.py ENDPOINTS)
TIMEOUT_SECONDS = 300.0  # per socket operation: a 100 MB upload is read and checked by the gateway as it arrives
CHUNK_BYTES = 1024 * 1024  # an upload or a result file goes through in pieces this large, never whole in memory
ENDED = ("completed", "failed", "expired", "cancelled")
# A batch's moments, in the order they happen (OpenAI's batch object).
TIMESTAMPS = (
    ("created", "created_at"),
    ("in progress", "in_progress_at"),
    ("finalizing", "finalizing_at"),
    ("completed", "completed_at"),
    ("failed", "failed_at"),
    ("cancelling", "cancelling_at"),
    ("cancelled", "cancelled_at"),
    ("expired", "expired_at"),
    ("expires", "expires_at"),
)


class BatchCliError(Exception):
    """A problem to print (`gateway: MESSAGE`), with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(BatchCliError):
    """The gateway's OpenAI-style error (`{"error": {"message", "type", "code"}}`)."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        super().__init__(f"error: {message}" + (f" ({code})" if code else f" (HTTP {status})"), 1)
        self.status = status
        self.code = code


def api_error(status: int, raw: bytes) -> ApiError:
    try:
        error = orjson.loads(raw)["error"]
        return ApiError(status, str(error["message"]), error.get("code"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ApiError(status, raw[:200].decode(errors="replace").strip() or "(no body)", None)


# -- the gateway's API ---------------------------------------------------------------------------------------


def multipart_parts(filename: str, fields: Mapping[str, str], boundary: str) -> tuple[bytes, bytes]:
    """The form's bytes before and after the file's content: the `fields`, then the `file` part's header; then the
    closing boundary (RFC 7578). The file itself is sent between them as it is read."""
    safe = filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


class Client:
    """One gateway's batch endpoints, as one key (and, with `team`, the master key acting for that team)."""

    def __init__(self, url: str, key: str | None, team: str | None, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.team = team
        self.timeout = timeout

    def _request(
        self, method: str, path: str, data: Any = None, headers: Mapping[str, str] | None = None
    ) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.key:
            request.add_header("authorization", f"Bearer {self.key}")
        if self.team is not None:
            request.add_header(TEAM_HEADER, self.team)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        return request

    def _open(self, request: urllib.request.Request, sending: str | None = None) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise api_error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if sending is not None and isinstance(reason, (BrokenPipeError, ConnectionResetError)):
                # The gateway answered before reading the whole upload and closed the connection: what it refuses
                # that way is a file over its size limit (its 413 is lost with the connection).
                raise BatchCliError(
                    f"the gateway at {self.url} closed the connection while {sending} was being sent ({reason}); "
                    "is the file larger than its GATEWAY_BATCH_FILE_MAX_BYTES?",
                    1,
                ) from None
            raise BatchCliError(
                f"cannot reach the gateway at {self.url}: {reason} (give --url, or set GATEWAY_URL)", 2
            ) from None

    def call(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = orjson.dumps(body) if body is not None else None
        headers = {"content-type": "application/json"} if data is not None else {}
        with self._open(self._request(method, path, data, headers)) as response:
            return self._json(response)

    def _json(self, response: Any) -> Any:
        try:
            return orjson.loads(response.read())
        except orjson.JSONDecodeError:
            raise BatchCliError(f"the answer from {self.url} is not JSON: is it a model-gateway?", 1) from None
        except (OSError, http.client.HTTPException) as exc:
            raise BatchCliError(f"the answer from {self.url} broke off: {exc!r}", 1) from None

    def upload(self, path: Path) -> dict[str, Any]:
        """`POST /v1/files` with the file streamed from disk (its length is known, so no chunked encoding)."""
        boundary = uuid.uuid4().hex
        head, tail = multipart_parts(path.name, {"purpose": "batch"}, boundary)
        try:
            size = path.stat().st_size
            source = path.open("rb")
        except OSError as exc:
            raise BatchCliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None

        def body() -> Iterator[bytes]:
            yield head
            while chunk := source.read(CHUNK_BYTES):
                yield chunk
            yield tail

        headers = {
            "content-type": f"multipart/form-data; boundary={boundary}",
            "content-length": str(len(head) + size + len(tail)),
        }
        sending = f"{path} ({size:,} bytes)"
        with source, self._open(self._request("POST", "/v1/files", body(), headers), sending) as response:
            uploaded: dict[str, Any] = self._json(response)
            return uploaded

    def download(self, file_id: str, out: IO[bytes]) -> int:
        """A file's content copied to `out` piece by piece; the bytes written."""
        path = f"/v1/files/{quote(file_id)}/content"
        written = 0
        with self._open(self._request("GET", path)) as response:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:  # (writing `out` can fail too: the caller's)
                    raise BatchCliError(
                        f"the download of {file_id} from {self.url} broke off after {written:,} bytes: {exc!r}", 1
                    ) from None
                if not chunk:
                    return written
                out.write(chunk)
                written += len(chunk)


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def client_for(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Client:
    """The gateway and key the options and the environment name. No key at all is allowed: a gateway without a
    master key is open, and one that needs a key says so (401)."""
    url = args.url or environ.get("GATEWAY_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise BatchCliError(f"--url must be an http:// or https:// URL, not {url!r}", 2)
    order = ("GATEWAY_MASTER_KEY", "GATEWAY_API_KEY") if args.team else ("GATEWAY_API_KEY", "GATEWAY_MASTER_KEY")
    key = args.key or next((environ[name] for name in order if environ.get(name)), None)
    return Client(url, key, args.team)


# -- option values -------------------------------------------------------------------------------------------


def metadata_pairs(values: Sequence[str]) -> dict[str, str] | None:
    """`--metadata k=v ...` as the batch's `metadata` (None when none is given)."""
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        key, equals, rest = value.partition("=")
        if not equals or not key.strip():
            raise BatchCliError(f"--metadata wants KEY=VALUE pairs, not {value!r}", 2)
        out[key.strip()] = rest
    return out


def batch_body(args: argparse.Namespace, file_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"input_file_id": file_id, "endpoint": args.endpoint, "completion_window": args.window}
    metadata = metadata_pairs(args.metadata)
    if metadata is not None:
        body["metadata"] = metadata
    return body


# -- rendering -----------------------------------------------------------------------------------------------


def nanos(text: Any) -> int | None:
    """A USD amount as the gateway writes it ("0.001250000", `gateway.money.usd_text`) in nano-dollars."""
    if text is None:
        return None
    try:
        return int(Decimal(str(text)) * NANOS_PER_USD)
    except InvalidOperation:
        return None


def money(text: Any) -> str:
    """ "$0.00125": cents when exact, else every significant digit (tables.usd), '-' when unknown."""
    return usd(nanos(text))


def saving(interactive: Any, cost: Any) -> str:
    """ "$X (Y%)": what the batch saves against the same lines at interactive prices."""
    full, paid = nanos(interactive), nanos(cost)
    if full is None or paid is None:
        return "-"
    saved = max(full - paid, 0)
    if full <= 0:
        return usd(saved)
    pct = (Decimal(saved) * 100 / Decimal(full)).quantize(Decimal("0.1"))
    return f"{usd(saved)} ({pct.normalize():f}%)"


def when(ts: Any) -> str:
    """A Unix time as ISO 8601 UTC, to the second; '-' when unset."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _details(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs]


def render_plan(plan: Mapping[str, Any]) -> str:
    """The plan summary (gateway/batches/planning.py `BatchPlan.summary`): lines per model, batch-API and
    interactive lines, estimated cost at the prices they run at and at interactive prices, errors by code, the
    saving and the reservation."""
    lines = []
    valid, invalid = plan.get("valid_lines", 0), plan.get("invalid_lines", 0)
    residency = plan.get("residency")
    lines.append(
        f"{plan.get('lines', valid + invalid):,} lines: {valid:,} valid, {invalid:,} invalid; "
        f"window {plan.get('window_hours')}h; residency {','.join(residency) if residency else 'any'}"
    )
    models = plan.get("models") or []
    if models:
        headers = ("MODEL", "PROVIDER", "REGION", "LINES", "BATCH API", "INTERACTIVE", "EST. COST", "AT INTERACTIVE")
        rows: list[Sequence[Any]] = [
            (
                m["model"],
                m.get("provider"),
                m.get("region"),
                f"{m['lines']:,}",
                f"{m.get('batch_api_lines', 0):,}",
                f"{m.get('interactive_lines', 0):,}",
                money(m.get("estimated_cost_usd")),
                money(m.get("estimated_interactive_cost_usd")),
            )
            for m in models
        ]
        if len(models) > 1:
            rows.append(
                (
                    "TOTAL",
                    "",
                    "",
                    f"{sum(m['lines'] for m in models):,}",
                    f"{sum(m.get('batch_api_lines', 0) for m in models):,}",
                    f"{sum(m.get('interactive_lines', 0) for m in models):,}",
                    money(plan.get("estimated_cost_usd")),
                    money(plan.get("estimated_interactive_cost_usd")),
                )
            )
        lines += ["", table(headers, rows, right=(3, 4, 5, 6, 7)), ""]
    errors = plan.get("errors") or {}
    if errors:
        counted = ", ".join(f"{code} {count:,}" for code, count in sorted(errors.items(), key=lambda e: (-e[1], e[0])))
        lines.append(f"invalid lines by error: {counted}")
    lines.append(
        f"estimated cost {money(plan.get('estimated_cost_usd'))} at batch prices, "
        f"{money(plan.get('estimated_interactive_cost_usd'))} at interactive prices: saves "
        f"{saving(plan.get('estimated_interactive_cost_usd'), plan.get('estimated_cost_usd'))}"
    )
    reserved = f"reserved {money(plan.get('reserved_usd'))} (the worst case"
    if plan.get("budget_left_usd") is not None:
        reserved += f"; the budget had {money(plan.get('budget_left_usd'))} left"
    steps = plan.get("budget_steps") or []
    if steps:
        reserved += f"; to fit it: {', '.join(steps)}"
    lines.append(reserved + ")")
    return "\n".join(lines)


def render_submitted(batch: Mapping[str, Any]) -> str:
    extra = batch.get("x_gateway") or {}
    lines = [
        f"{batch['id']}  {batch['status']}",
        f"endpoint {batch['endpoint']}, window {batch['completion_window']}, input file {batch['input_file_id']}",
    ]
    if extra.get("plan"):
        lines += ["", render_plan(extra["plan"])]
    lines += ["", f"follow it: gateway batch show {batch['id']}"]
    return "\n".join(lines)


def render_explained(explained: Mapping[str, Any]) -> str:
    lines = [f"team {explained.get('team')}", render_plan(explained)]
    refusal = explained.get("refusal")
    if explained.get("admitted"):
        lines.append("-> admitted: `gateway batch submit` with the same file and options would create this batch now")
    elif refusal:
        lines.append(f"-> refused: {refusal['status']} {refusal['code']}: {refusal['message']}")
    else:
        lines.append("-> refused")
    return "\n".join(lines)


def _counts(batch: Mapping[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    return f"{counts.get('completed', 0):,}/{counts.get('failed', 0):,}/{counts.get('total', 0):,}"


def render_batch(batch: Mapping[str, Any]) -> str:
    """`gateway batch show`: status and its moments, counts, usage, files, the plan, and what the lines cost at
    batch prices against the same usage at interactive prices (the saving)."""
    extra = batch.get("x_gateway") or {}
    counts = batch.get("request_counts") or {}
    pairs: list[tuple[str, Any]] = [
        ("status", batch["status"]),
        ("endpoint", batch["endpoint"]),
        ("window", batch["completion_window"]),
        ("input file", batch["input_file_id"]),
    ]
    pairs += [(label, when(batch.get(field))) for label, field in TIMESTAMPS if batch.get(field) is not None]
    pairs.append(
        (
            "requests",
            f"{counts.get('total', 0):,} total: {counts.get('completed', 0):,} completed, "
            f"{counts.get('failed', 0):,} failed",
        )
    )
    usage = batch.get("usage")
    if usage:
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
        pairs.append(
            (
                "tokens",
                f"{usage.get('input_tokens', 0):,} input ({cached:,} cached), {usage.get('output_tokens', 0):,} output",
            )
        )
    if batch.get("output_file_id"):
        pairs.append(("output file", f"{batch['output_file_id']}  (gateway batch results {batch['id']})"))
    if batch.get("error_file_id"):
        pairs.append(("error file", f"{batch['error_file_id']}  (gateway batch results {batch['id']} --errors)"))
    if batch.get("metadata"):
        pairs.append(("metadata", " ".join(f"{k}={v}" for k, v in batch["metadata"].items())))
    lines = [batch["id"], *_details(pairs)]
    for error in (batch.get("errors") or {}).get("data") or []:
        where = f" (line {error['line']})" if error.get("line") is not None else ""
        lines.append(f"error{where}: {error.get('message')} ({error.get('code')})")
    if extra.get("plan"):
        lines += ["", "plan (estimated when it was created):", render_plan(extra["plan"])]
    if extra:
        ran = "so far" if batch["status"] not in ENDED else "in all"
        lines += [
            "",
            *_details(
                [
                    ("cost", f"{money(extra.get('cost_usd'))} at batch prices ({ran})"),
                    (
                        "interactive",
                        f"{money(extra.get('interactive_cost_usd'))} for the same usage at interactive prices",
                    ),
                    ("saved", saving(extra.get("interactive_cost_usd"), extra.get("cost_usd"))),
                    ("reserved", money(extra.get("reserved_usd"))),
                ]
            ),
        ]
    return "\n".join(lines)


def render_list(listing: Mapping[str, Any]) -> str:
    batches = listing.get("data") or []
    if not batches:
        return "no batches"
    headers = ("ID", "STATUS", "ENDPOINT", "CREATED", "COMPLETED/FAILED/TOTAL", "COST", "SAVED")
    rows = []
    for b in batches:
        extra = b.get("x_gateway") or {}
        rows.append(
            (
                b["id"],
                b["status"],
                b["endpoint"],
                when(b.get("created_at")),
                _counts(b),
                money(extra.get("cost_usd")),
                money(extra.get("saved_usd")),
            )
        )
    out = table(headers, rows, right=(4, 5, 6))
    if listing.get("has_more"):
        out += f"\n\nmore: gateway batch list --after {listing.get('last_id')}"
    return out


def render_cancelled(batch: Mapping[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    return (
        f"{batch['id']}  {batch['status']}  ({counts.get('completed', 0):,} completed, {counts.get('failed', 0):,} "
        f"failed of {counts.get('total', 0):,}; the lines that ran are kept: gateway batch results {batch['id']})"
    )


def _emit(args: argparse.Namespace, value: Any, render: Callable[[Any], str]) -> None:
    """What a command prints: the gateway's JSON with `--json`, else its rendering."""
    if args.json:
        print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(value))


# -- commands ------------------------------------------------------------------------------------------------


def _input_file(args: argparse.Namespace) -> Path:
    path = Path(args.file)
    if not path.is_file():
        raise BatchCliError(f"no such file: {path}", 2)
    return path


def cmd_submit(args: argparse.Namespace) -> int:
    path = _input_file(args)
    metadata_pairs(args.metadata)  # bad usage is found before the upload
    client = client_for(args)
    uploaded = client.upload(path)
    try:
        batch = client.call("POST", "/v1/batches", batch_body(args, uploaded["id"]))
    except ApiError as refused:
        if refused.status < 500:  # refused, nothing created: the uploaded file would only be litter
            _forget(client, uploaded["id"])
        raise
    _emit(args, batch, render_submitted)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    path = _input_file(args)
    metadata_pairs(args.metadata)
    client = client_for(args)
    uploaded = client.upload(path)
    try:
        explained = client.call("POST", "/v1/batches/explain", batch_body(args, uploaded["id"]))
    finally:
        _forget(client, uploaded["id"])
    _emit(args, explained, render_explained)
    return 0 if explained.get("admitted") else 1


def _forget(client: Client, file_id: str) -> None:
    """Delete an uploaded file, best effort: failing to tidy up must not hide what the command has to say."""
    try:
        client.call("DELETE", f"/v1/files/{quote(file_id)}")
    except BatchCliError as exc:
        print(f"gateway: could not delete the uploaded file {file_id}: {exc}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    listing = client_for(args).call("GET", "/v1/batches", query={"limit": args.limit, "after": args.after})
    _emit(args, listing, render_list)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    batch = client_for(args).call("GET", f"/v1/batches/{quote(args.id)}")
    _emit(args, batch, render_batch)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    batch = client_for(args).call("POST", f"/v1/batches/{quote(args.id)}/cancel")
    _emit(args, batch, render_cancelled)
    return 0


def result_file(batch: Mapping[str, Any], errors: bool) -> str:
    """The id of the batch's output (or error) file; a clear refusal when there is none (yet)."""
    field, kind = ("error_file_id", "error") if errors else ("output_file_id", "output")
    file_id = batch.get(field)
    if file_id:
        return str(file_id)
    status, counts = batch.get("status"), batch.get("request_counts") or {}
    if status not in ENDED:
        raise BatchCliError(
            f"batch {batch['id']} has not finished (status {status}, {counts.get('completed', 0):,} completed and "
            f"{counts.get('failed', 0):,} failed of {counts.get('total', 0):,}): no {kind} file yet",
            1,
        )
    other = "" if errors else f"; its failed lines: gateway batch results {batch['id']} --errors"
    raise BatchCliError(f"batch {batch['id']} ended {status} with no {kind} file{other}", 1)


def cmd_results(args: argparse.Namespace) -> int:
    client = client_for(args)
    batch = client.call("GET", f"/v1/batches/{quote(args.id)}")
    file_id = result_file(batch, args.errors)
    if args.output is None or args.output == "-":
        try:
            client.download(file_id, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `... | head`: the reader has what it wanted
            # (Python's own advice: point stdout at devnull, or its flush at exit fails again, loudly)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        return 0
    target = Path(args.output)
    partial = target.with_name(target.name + ".part")  # the file appears whole or not at all
    try:
        with partial.open("wb") as out:
            written = client.download(file_id, out)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BatchCliError(f"cannot write {target}: {exc.strerror or exc}", 1) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"gateway: wrote {written:,} bytes of {file_id} to {target}", file=sys.stderr)
    return 0


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BatchCliError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return exc.exit_code

    return run


# -- parser --------------------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=None, help=f"the gateway (default: $GATEWAY_URL, else {DEFAULT_URL})")
    parent.add_argument(
        "--key",
        default=None,
        help="the key to send (default: $GATEWAY_API_KEY, a team's key, else $GATEWAY_MASTER_KEY)",
    )
    parent.add_argument("--team", default=None, help="act for this team (sends x-gateway-team; needs the master key)")
    parent.add_argument("--json", action="store_true", help="print the gateway's JSON instead of tables")
    return parent


def _batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the batch input file (JSONL, one request per line)")
    parser.add_argument("--window", default="24h", help="completion window, from 1h to 7d (default 24h)")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default=ENDPOINTS[0], help="what every line calls")
    parser.add_argument(
        "--metadata",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the batch's metadata (up to 16 pairs)",
    )


def _page_limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError("a whole number from 1 to 100")
    return int(text)


def add_batch_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `batch` and its actions to the `gateway` command's subcommands."""
    common = _common()
    batch = commands.add_parser("batch", help="submit, explain, follow and read batches on a running gateway")
    actions = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")

    submit = actions.add_parser(
        "submit", parents=[common], help="upload a JSONL file and create a batch; print its id and plan"
    )
    _batch_options(submit)
    submit.set_defaults(func=_guarded(cmd_submit))

    explain = actions.add_parser(
        "explain", parents=[common], help="what submitting a file would do (models, cost, saving), creating nothing"
    )
    _batch_options(explain)
    explain.set_defaults(func=_guarded(cmd_explain))

    listing = actions.add_parser("list", parents=[common], help="batches, newest first, with their cost and saving")
    listing.add_argument("--limit", type=_page_limit, default=20, help="at most this many (1 to 100, default 20)")
    listing.add_argument("--after", default=None, metavar="ID", help="the page after this batch id")
    listing.set_defaults(func=_guarded(cmd_list))

    show = actions.add_parser(
        "show", parents=[common], help="a batch: status, counts, plan, cost and what it saved against interactive"
    )
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=_guarded(cmd_show))

    cancel = actions.add_parser("cancel", parents=[common], help="cancel a batch (the lines that ran are kept)")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=_guarded(cmd_cancel))

    results = actions.add_parser(
        "results", parents=[common], help="write a finished batch's output file (or, --errors, its error file)"
    )
    results.add_argument("id", metavar="ID")
    results.add_argument("--errors", action="store_true", help="the error file (the lines that failed)")
    results.add_argument("-o", "--output", default=None, metavar="FILE", help="write here (default: stdout)")
    results.set_defaults(func=_guarded(cmd_results))
