"""Property tests: the batch doors and policy replay answer hostile input with a 4xx, never a 5xx.

As tests/http/test_bad_input_fuzz.py does for the request doors, against a real gateway on 127.0.0.1 with the
emulators behind it: odd JSON bodies to `POST /v1/batches`, `/v1/batches/explain` and `/admin/replay`; odd
multipart uploads to `POST /v1/files`; and files of hostile lines (not JSON, not objects, wrong types in every
field of a line and of its body, unknown urls and methods, duplicate ids) uploaded and then explained and created
as batches, whose batch and error file must then read back without a 5xx either.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.test_bad_input_fuzz import (
    AUTH,
    CHAT_EXTRA,
    CHAT_FIELDS,
    CONTENT_TYPES,
    EMBEDDING_FIELDS,
    MASTER,
    ODD_STRINGS,
    body_bytes,
    check,
    fields_over,
    json_values,
)
from tests.support.gateways import GatewayFactory
from tests.support.http import Answer, request

pytestmark = pytest.mark.slow

TEAM = "fuzz-batches"
AS_TEAM = {**AUTH, "x-gateway-team": TEAM}
CHAT = "/v1/chat/completions"
FUZZ = settings(
    max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

odd_text = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=20))


def multipart(purpose: str, filename: str, content: bytes, boundary: str) -> bytes:
    """A well-formed upload body: the `purpose` field, then the `file` part."""
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def upload(url: str, content: bytes, purpose: str = "batch", filename: str = "in.jsonl") -> Answer:
    boundary = uuid.uuid4().hex
    headers = {**AS_TEAM, "content-type": f"multipart/form-data; boundary={boundary}"}
    return request(url, "POST", "/v1/files", multipart(purpose, filename, content, boundary), headers)


@pytest.fixture(scope="module")
def url(start_gateway: GatewayFactory) -> str:
    base = start_gateway(master_key=MASTER).url
    created = request(
        base, "POST", "/admin/teams", json.dumps({"name": TEAM}).encode(), {"content-type": "application/json", **AUTH}
    )
    assert created.status == 201, created.body
    return base


@pytest.fixture(scope="module")
def file_id(url: str) -> str:
    line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "kimi-k2.6", "messages": []}}
    uploaded = upload(url, json.dumps(line).encode() + b"\n")
    assert uploaded.status == 200, uploaded.body
    return str(uploaded.json()["id"])


BATCH_FIELDS = ["input_file_id", "endpoint", "completion_window", "metadata"]
BATCH_EXTRA = {
    "endpoint": st.one_of(st.sampled_from([CHAT, "/v1/embeddings", "/v1/completions", "", "/v1/batches"]), odd_text),
    "completion_window": st.one_of(st.sampled_from(["24h", "1h", "7d", "0h", "-1h", "999d", "24"]), odd_text),
    "metadata": st.one_of(json_values, st.dictionaries(odd_text, odd_text, max_size=20)),
}
REPLAY_FIELDS = ["policy_yaml", "policy_name", "policy_files", "policy_dir", "team", "since", "until"]
REPLAY_EXTRA = {
    "policy_yaml": st.one_of(odd_text, st.sampled_from(["name: x\n", "{", "rules: [1, 2]", "a: !!python/object {}"])),
    "policy_files": st.one_of(json_values, st.dictionaries(odd_text, odd_text, max_size=3)),
    "policy_dir": st.one_of(odd_text, st.sampled_from(["/", "/etc/passwd", "../..", "/proc/self", "\x00"])),
    "since": st.one_of(odd_text, st.sampled_from(["30d", "0d", "-1d", "2026-01-01", "99999999d"])),
    "until": st.one_of(odd_text, st.sampled_from(["now", "2026-13-45", "1e309"])),
}


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/batches/explain", "/admin/replay"])
def test_no_batch_or_replay_body_gets_a_5xx(url: str, file_id: str, path: str) -> None:
    if path == "/admin/replay":
        bodies = body_bytes({"policy_yaml": "name: default\n"}, REPLAY_FIELDS, REPLAY_EXTRA)
    else:
        base = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        extra = {**BATCH_EXTRA, "input_file_id": st.one_of(st.just(file_id), odd_text)}
        bodies = body_bytes(base, BATCH_FIELDS, extra)

    @FUZZ
    @given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES[:3] * 4 + CONTENT_TYPES[3:]))
    def post(body: bytes, content_type: str) -> None:
        headers = {**AS_TEAM, **({"content-type": content_type} if content_type else {})}
        answer = request(url, "POST", path, body, headers)
        check(answer, "POST", path, body, content_type)
        if path == "/v1/batches" and answer.status == 200:
            request(url, "POST", f"/v1/batches/{answer.json()['id']}/cancel", b"", AS_TEAM)

    post()


# -- uploads -----------------------------------------------------------------------------------------------


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body and its content type: parts named file/purpose/others, odd filenames and purposes, odd
    headers, missing or repeated parts, a boundary that does not match, or bytes that are not multipart at all."""
    if draw(st.booleans()):  # well formed, with odd names, purposes and contents
        purpose = draw(st.sampled_from(["batch", "batch", "fine-tune", "", "BATCH", "batch\r\nX-Evil: 1"]))
        filename = draw(st.sampled_from(["in.jsonl", "", "../../etc/passwd", "ä.jsonl", "a" * 300, "x\\y"]))
        content = draw(st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\n", b'{"custom_id": "a"}\n'])))
        return multipart(purpose, filename, content, "b0"), "multipart/form-data; boundary=b0"
    boundary = draw(st.sampled_from(["b0undary", "x", "-" * 70, "a b", "ü"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["file", "purpose", "file", "purpose", "", "x", 'f"ile']))
        filename = draw(st.one_of(st.none(), st.sampled_from(["in.jsonl", "", "../../etc/passwd", "ä\x00.jsonl"])))
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        value = draw(st.one_of(st.sampled_from([b"batch", b"fine-tune", b"", b"\xff\xfe"]), st.binary(max_size=64)))
        extra = draw(st.sampled_from(["", "Content-Type: application/jsonl\r\n", "Content-Transfer-Encoding: x\r\n"]))
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + value + b"\r\n")
    ending = draw(st.sampled_from([f"--{boundary}--\r\n", "", f"--{boundary}", "--other--\r\n"])).encode()
    body = b"".join(parts) + ending
    declared = draw(st.sampled_from([boundary, "other", ""]))
    content_type = draw(
        st.sampled_from(
            [f"multipart/form-data; boundary={declared}", "multipart/form-data", "application/json", "text/plain"]
        )
    )
    return body, content_type


def test_no_upload_gets_a_5xx(url: str) -> None:
    @FUZZ
    @given(upload_body=multipart_bodies())
    def post(upload_body: tuple[bytes, str]) -> None:
        body, content_type = upload_body
        answer = request(url, "POST", "/v1/files", body, {**AS_TEAM, "content-type": content_type})
        check(answer, "POST", "/v1/files", body, content_type)
        if answer.status == 200:  # what was stored reads back whole
            stored = answer.json()
            content = request(url, "GET", f"/v1/files/{stored['id']}/content", None, AS_TEAM)
            assert content.status == 200 and len(content.body) == stored["bytes"]
            assert request(url, "DELETE", f"/v1/files/{stored['id']}", None, AS_TEAM).status == 200

    post()


# -- hostile lines -----------------------------------------------------------------------------------------

LINE_FIELDS = ["custom_id", "method", "url", "body"]
line_objects = fields_over(
    {"custom_id": "x", "method": "POST", "url": CHAT, "body": {"model": "kimi-k2.6", "messages": []}},
    LINE_FIELDS,
    {
        "custom_id": st.one_of(st.sampled_from(["x", "y", "", "a" * 600]), json_values),
        "method": st.one_of(st.sampled_from(["POST", "GET", "post", ""]), json_values),
        "url": st.one_of(st.sampled_from([CHAT, "/v1/embeddings", "/v1/files", "http://evil/v1", ""]), json_values),
        "body": st.one_of(
            fields_over({"model": "kimi-k2.6", "messages": []}, CHAT_FIELDS, CHAT_EXTRA),
            fields_over({"model": "mistral-embed", "input": "x"}, EMBEDDING_FIELDS, {}),
            json_values,
        ),
    },
)
raw_lines = st.one_of(
    line_objects.map(lambda line: json.dumps(line, ensure_ascii=False).encode()),
    line_objects.map(lambda line: json.dumps(line, ensure_ascii=False).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"custom_id": "x"} trailing', b"1e999", b"  \t"]),
)


def test_no_file_of_hostile_lines_gets_a_5xx(url: str) -> None:
    @FUZZ
    @given(lines=st.lists(raw_lines, min_size=1, max_size=6), ending=st.sampled_from([b"\n", b"\r\n", b""]))
    def run(lines: list[bytes], ending: bytes) -> None:
        content = b"\n".join(lines) + ending
        uploaded = upload(url, content)
        check(uploaded, "POST", "/v1/files", content, "multipart/form-data")
        if uploaded.status != 200:
            return
        body = json.dumps({"input_file_id": uploaded.json()["id"], "endpoint": CHAT}).encode()
        headers = {**AS_TEAM, "content-type": "application/json"}
        for path in ("/v1/batches/explain", "/v1/batches"):
            answer = request(url, "POST", path, body, headers)
            check(answer, "POST", path, content, "application/json")
        if answer.status != 200:
            return
        batch = answer.json()
        cancelled = request(url, "POST", f"/v1/batches/{batch['id']}/cancel", b"", AS_TEAM)
        check(cancelled, "POST", "cancel", content, "")
        read = request(url, "GET", f"/v1/batches/{batch['id']}", None, AS_TEAM)
        check(read, "GET", "batch", content, "")
        for name in ("error_file_id", "output_file_id"):
            if read.json().get(name):
                out = request(url, "GET", f"/v1/files/{read.json()[name]}/content", None, AS_TEAM)
                check(out, "GET", name, content, "")
                for result in out.body.splitlines():
                    assert isinstance(json.loads(result).get("custom_id"), str | None), result

    run()
