"""Reading a batch's input file: every line validated on its own (gateway/batches/lines.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.batches.lines import count_lines, parse_lines
from gateway.batches.windows import window_hours
from gateway.errors import GatewayError

CHAT = "/v1/chat/completions"


def encoded(*items: Any) -> bytes:
    return b"\n".join(item if isinstance(item, bytes) else json.dumps(item).encode() for item in items) + b"\n"


def chat_line(custom_id: str = "a", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body},
    }


def test_valid_lines_keep_their_body_and_figures() -> None:
    lines = parse_lines(encoded(chat_line("a", max_tokens=7), chat_line("b", n=2)), CHAT)
    assert [line.custom_id for line in lines] == ["a", "b"]
    assert all(line.error is None and line.body is not None for line in lines)
    assert lines[0].params is not None and lines[0].params.max_output == 7
    assert lines[1].params is not None and lines[1].params.n == 2


def test_one_bad_line_does_not_cost_the_others() -> None:
    content = encoded(
        chat_line("ok"),
        b"{not json",
        [1, 2],
        {"custom_id": "nobody", "method": "POST", "url": CHAT},
        chat_line("ok"),
        chat_line("wrong-url") | {"url": "/v1/embeddings"},
        chat_line("get") | {"method": "GET"},
        chat_line("streaming", stream=True),
        chat_line("forbidden", api_base="http://evil.example"),
        {"method": "POST", "url": CHAT, "body": {"model": "auto", "messages": []}},
        chat_line("last"),
    )
    lines = parse_lines(content, CHAT)
    codes = [(line.custom_id, line.error.code if line.error else None) for line in lines]
    assert codes == [
        ("ok", None),
        (None, "invalid_json"),
        (None, "invalid_type"),
        ("nobody", "invalid_type"),
        ("ok", "duplicate_custom_id"),
        ("wrong-url", "invalid_value"),
        ("get", "invalid_value"),
        ("streaming", "invalid_value"),
        ("forbidden", "forbidden_parameter"),
        (None, "invalid_value"),
        ("last", None),
    ]
    assert all(line.error is None or line.error.status == 400 for line in lines)


def test_blank_lines_are_not_lines() -> None:
    content = b"\n" + encoded(chat_line("a")) + b"   \n\n" + encoded(chat_line("b"))
    assert [line.index for line in parse_lines(content, CHAT)] == [0, 1]
    assert count_lines(content) == 2


def test_a_body_too_deep_to_send_is_refused_on_its_line() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    lines = parse_lines(encoded(chat_line("deep", metadata={"x": deep}), chat_line("fine")), CHAT)
    assert lines[0].error is not None and lines[0].error.code == "invalid_json"
    assert lines[1].error is None


def test_embeddings_lines_are_checked_as_embeddings() -> None:
    good = {"custom_id": "e", "url": "/v1/embeddings", "body": {"model": "mistral-embed", "input": ["a", "b"]}}
    bad = {"custom_id": "f", "url": "/v1/embeddings", "body": {"model": "mistral-embed", "input": 5}}
    lines = parse_lines(encoded(good, bad), "/v1/embeddings")
    assert lines[0].error is None and lines[1].error is not None and lines[1].error.code == "invalid_type"


@pytest.mark.parametrize(("text", "hours"), [("24h", 24), ("1h", 1), ("12h", 12), ("7d", 168), ("2d", 48)])
def test_completion_windows(text: str, hours: int) -> None:
    assert window_hours(text) == hours


@pytest.mark.parametrize("text", ["0h", "8d", "169h", "24", "h", "1w", "", "-1h", 24, None])
def test_completion_windows_refused(text: Any) -> None:
    with pytest.raises(GatewayError) as refused:
        window_hours(text)
    assert refused.value.status == 400 and refused.value.param == "completion_window"
