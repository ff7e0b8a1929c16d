"""What the providers' batch APIs share: one pooled HTTP session, JSON calls and file transfers with the
interactive path's error mapping, and the reading of result files.

Mistral's and Moonshot's (OpenAI's) result lines have one envelope: `{"custom_id", "response": {"status_code",
"body"}, "error"}` (Mistral: the mistralai SDK's own reader, mistralai/extra/batch/client.py `_parse_output_obj`,
whose `error` is a string; OpenAI: https://platform.openai.com/docs/api-reference/batch/request-output, whose
`error` is `{"code", "message"}` or null). So one reader serves both.

The URL and the key come from the catalog's provider only: paths are built here from the base URL and the
provider's own ids (quoted as one path segment each), redirects are not followed (a 3xx is an error, so the key
is never sent to another address), and no field of a line can set a header or a URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from gateway import __version__
from gateway.catalog import Provider
from gateway.errors import GatewayError
from gateway.providers.batches.base import GATEWAY_JOB, BatchApi, JobState, LineOutcome
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.providers.upstream_errors import connect_error, map_status_error, provider_message, timeout_error
from gateway.types import Json

log = logging.getLogger("gateway.batches")

# The ids the gateway gives the lines it sends (base.py: `line-<index>`); a result line with any other id was
# never sent by the gateway and is ignored.
LINE_ID = re.compile(r"line-[0-9]{1,12}")
# A batch API answers a handful of calls per job (upload, create, poll, download): a small pool is plenty.
POOL_SIZE = 16
# What a result file's name says of the upload (Moonshot requires the `.jsonl` extension: its "Create Batch"
# limits, https://platform.kimi.ai/docs/api/batch-create).
UPLOAD_NAME = "gateway-batch.jsonl"
# `find_job` reads the provider's job list newest first, 100 jobs a page (the largest page both lists take:
# Mistral's page_size defaults to 100, the mistralai SDK's JobsAPIRoutesBatchGetBatchJobsRequest; OpenAI's and
# Moonshot's `limit` is 1 to 100, https://platform.openai.com/docs/api-reference/batch/list), for at most 20 pages:
# the job it looks for was created moments before its node died, so it is among the newest; a provider listing
# 2,000 newer jobs answers None rather than keep a recovering runner paging.
LIST_PAGE_SIZE = 100
LIST_PAGES = 20


class HttpBatchApi(BatchApi):
    """A provider's batch API over HTTP: the session, the calls, the result reader. Subclasses say the paths and
    the shapes."""

    def __init__(self, provider: Provider, adapter: OpenAICompatibleAdapter) -> None:
        super().__init__(provider)
        self.adapter = adapter
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.provider.name

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is not None:
            return
        t = self.provider.timeouts  # the interactive path's timeouts (OpenAICompatibleAdapter.start)
        headers = {"User-Agent": f"model-gateway/{__version__}"}
        if self.provider.api_key is not None:
            headers["Authorization"] = f"Bearer {self.provider.api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=min(self.provider.max_connections, POOL_SIZE), keepalive_timeout=60, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.first_byte),
            headers=headers,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ------------------------------------------------------------------------------------------------
    def url(self, *segments: str) -> URL:
        """The provider's base URL (from the catalog) and `segments`, each quoted as one path segment: an id the
        provider returned cannot add a path, a query or another host."""
        path = "/".join(quote(segment, safe="") for segment in segments)
        return URL(f"{self.provider.base_url}/{path}", encoded=True)

    async def call(self, method: str, url: URL, **kwargs: Any) -> bytes:
        """One call; its body when the provider answers 2xx, else the provider's refusal as the interactive path
        maps it (GatewayError)."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as response:
                body = await response.read()
                if not 200 <= response.status < 300:
                    raise self._scrubbed(map_status_error(self.name, response.status, body, response.headers))
                return body
        except TimeoutError as exc:
            raise timeout_error(self.name, f"batch API {method} {url.path}") from exc
        except aiohttp.ClientError as exc:
            raise connect_error(self.name, exc) from exc

    async def call_json(self, method: str, url: URL, payload: Json | None = None) -> Json:
        headers = {"Accept": "application/json"}
        data = None
        if payload is not None:
            data = orjson.dumps(payload)
            headers["Content-Type"] = "application/json"
        body = await self.call(method, url, data=data, headers=headers)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise malformed(self.name, f"{method} {url.path}")
        return answer

    async def upload(self, content: bytes) -> str:
        """`POST /files` as multipart form data: `purpose=batch` and the JSONL as `file` (Mistral:
        https://docs.mistral.ai/capabilities/batch "-F purpose=batch -F file=@batch.jsonl", mistralai
        MultiPartBodyParams; OpenAI/Moonshot: https://platform.openai.com/docs/api-reference/files/create). The
        uploaded file's id."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=UPLOAD_NAME, content_type="application/jsonl")
        body = await self.call("POST", self.url("files"), data=form, headers={"Accept": "application/json"})
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        file_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise malformed(self.name, "POST /files")
        return file_id

    async def download(self, file_id: str) -> bytes:
        """`GET /files/{id}/content` (both providers, and OpenAI's files API)."""
        return await self.call("GET", self.url("files", file_id, "content"))

    async def forget(self, file_id: str) -> None:
        """Delete an uploaded file no job uses (its job was refused); best effort: it only tidies the provider's
        file list (Moonshot caps batch files per organisation, https://platform.kimi.ai/docs/api/batch-create)."""
        try:
            await self.call("DELETE", self.url("files", file_id))
        except GatewayError as exc:
            log.warning("%s: could not delete the unused batch input file %s: %s", self.name, file_id, exc.message)

    def _scrubbed(self, error: GatewayError) -> GatewayError:
        """The provider's key never appears in an error, even if the provider echoed it."""
        key = self.provider.api_key.get_secret_value() if self.provider.api_key is not None else ""
        if key and key in error.message:
            error.message = error.message.replace(key, "[provider key]")
            error.args = (error.message,)
        return error

    # -- results ---------------------------------------------------------------------------------------------
    async def read_results(self, file_ids: Iterable[str | None]) -> list[LineOutcome]:
        """Every line of the given result files (output first, then errors): one outcome per line id, the first
        seen winning."""
        outcomes: dict[str, LineOutcome] = {}
        for file_id in file_ids:
            if not file_id:
                continue
            content = await self.download(file_id)
            for number, raw in enumerate(content.splitlines(), 1):
                if not raw.strip():
                    continue
                outcome = self.outcome(raw, file_id, number)
                if outcome is None:
                    continue
                if outcome.id in outcomes:
                    log.warning(
                        "%s: result file %s line %d repeats %s; kept the first", self.name, file_id, number, outcome.id
                    )
                    continue
                outcomes[outcome.id] = outcome
        return list(outcomes.values())

    def outcome(self, raw: bytes, file_id: str, number: int) -> LineOutcome | None:
        """One result line as the gateway returns it; None (with a warning) for a line it cannot read or whose id
        it never sent."""
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            log.warning("%s: result file %s line %d is not a JSON object; skipped", self.name, file_id, number)
            return None
        line_id = item.get("custom_id")
        if not isinstance(line_id, str) or not LINE_ID.fullmatch(line_id):
            log.warning(
                "%s: result file %s line %d has an id the gateway never sent; skipped", self.name, file_id, number
            )
            return None
        response = item.get("response")
        error = item.get("error")
        if response is None and error is None:
            log.warning(
                "%s: result file %s line %d has neither response nor error; skipped", self.name, file_id, number
            )
            return None
        response = response if isinstance(response, dict) else {}
        status = response.get("status_code")
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        body = response.get("body")
        if error is None and status == 200:
            unreadable = LineOutcome(
                line_id,
                502,
                error_json(f"{self.name} sent a malformed answer", "upstream_error", "upstream_malformed"),
                None,
            )
            if not isinstance(body, dict):
                return unreadable
            try:
                answer, usage = self.adapter.batch_answer(body)
            except (AttributeError, KeyError, TypeError, ValueError):
                # An answer in no shape the provider's reply fixes know: this line fails, not the whole job.
                log.warning("%s: result file %s line %d: an answer in no known shape", self.name, file_id, number)
                return unreadable
            return LineOutcome(line_id, 200, answer, usage)
        return LineOutcome(line_id, *self.line_error(status, body, error), None)

    def line_error(self, status: int | None, body: Any, error: Any) -> tuple[int, Json]:
        """A failed line: the provider's status for it (500 when it gives none, or gives a success with an
        error) and an OpenAI-style error body, its message as the interactive path words a provider's refusal."""
        code_status = status if status is not None and status >= 400 else 500
        message: str | None = None
        etype: str | None = None
        code: str | None = None
        if body is not None:
            message, etype, code = provider_message(body if isinstance(body, bytes) else orjson.dumps(body))
        if isinstance(error, dict):
            said, error_type, error_code = provider_message(orjson.dumps(error))
            message = message or said
            etype = etype or error_type
            code = code or error_code
        elif isinstance(error, str) and error:
            message = message or error
        text = f"{self.name} returned {code_status}: {message or 'no error message'}"
        key = self.provider.api_key.get_secret_value() if self.provider.api_key is not None else ""
        if key and key in text:
            text = text.replace(key, "[provider key]")
        return code_status, error_json(text, etype or default_type(code_status), code)


def known_state(provider: str, states: Mapping[str, JobState], upstream: str) -> JobState:
    """The gateway's state for a provider's status word. A word the provider added since (Mistral's SDK types the
    status as an open enum) counts as running: the job is polled on, and its word is shown as it is."""
    state = states.get(upstream)
    if state is None:
        log.warning("%s: unknown batch job status %r, taken as running", provider, upstream)
        return "running"
    return state


def search_page(jobs: list[Any], gateway_job: str, created_after: int) -> tuple[Json | None, bool]:
    """One page of a provider's jobs, newest first: the first whose metadata says `gateway_job` and that was created
    at or after `created_after`, and whether the search ends here (found, or a job created before `created_after`
    reached: every later page lists older ones still). A job that does not say when it was created is judged by
    its metadata alone (the tag names one gateway job; the time only bounds the search)."""
    for job in jobs:
        if not isinstance(job, dict):
            continue
        created = count_field(job.get("created_at"))
        if created is not None and created < created_after:
            return None, True
        metadata = job.get("metadata")
        if isinstance(metadata, dict) and metadata.get(GATEWAY_JOB) == gateway_job:
            return job, True
    return None, False


def search_exhausted(provider: str, gateway_job: str) -> None:
    log.warning(
        "%s: no batch job tagged %s among the newest %d jobs listed; searched no further",
        provider,
        gateway_job,
        LIST_PAGES * LIST_PAGE_SIZE,
    )


def text_field(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def count_field(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def default_type(status: int) -> str:
    """The error type a refusal without one gets, as upstream_errors words the interactive path's."""
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if 400 <= status < 500 else "upstream_error"


def error_json(message: str, etype: str, code: str | None) -> Json:
    """OpenAI's error object (gateway.errors.error_body), as JSON."""
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def malformed(provider: str, what: str) -> GatewayError:
    return GatewayError(502, f"{provider} sent a malformed answer to {what}", "upstream_error", "upstream_malformed")


def jsonl(items: Iterable[Json]) -> bytes:
    """JSON Lines: one object per line, each line ended."""
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def check_line_ids(ids: Iterable[str]) -> None:
    """The gateway's own ids only: a result line is matched to its request by them."""
    for line_id in ids:
        if not LINE_ID.fullmatch(line_id):
            raise ValueError(f"{line_id!r} is not a gateway line id (line-<index>)")
