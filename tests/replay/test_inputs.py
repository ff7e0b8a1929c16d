"""The decision inputs' JSON (gateway/replay/inputs.py): written once per request, read back by replay."""

from __future__ import annotations

import orjson

from gateway.replay.inputs import encode_inputs, inputs_of, residency_regions
from gateway.store.base import LedgerRow
from gateway.tokens import Count
from tests.replay.rows import catalog, row


def test_encoded_inputs_read_back_as_recorded() -> None:
    counts = {"mistral-medium-3.5": Count(1_180, False, "estimate", 200), "kimi-k2.6": Count(1_096, True, "o200k", 0)}
    text = encode_inputs(counts, 1_180, {"tools", "chat"}, 256, 2, ["eu"], 256)
    assert orjson.loads(text) == {
        "counts": {"mistral-medium-3.5": 1_180, "kimi-k2.6": 1_096},
        "tokens": 1_180,
        "capabilities": ["chat", "tools"],
        "max_tokens": 256,
        "n": 2,
        "residency": ["eu"],
        "expected_output": 256,
    }
    read = inputs_of(_with(text))
    assert read.recorded and read.counts == {"mistral-medium-3.5": 1_180, "kimi-k2.6": 1_096}
    assert (read.tokens, read.capabilities, read.max_tokens, read.n) == (1_180, {"chat", "tools"}, 256, 2)
    assert read.residency == {"eu"} and read.expected_output(1024) == 256


def test_expected_output_is_max_tokens_else_the_default_and_none_for_embeddings() -> None:
    unset = inputs_of(_with(encode_inputs({}, 10, {"chat"}, None, 1, None, 1024)))
    assert unset.expected_output(2048) == 2048  # the replay's default, as the gateway would price it now
    embeddings = inputs_of(_with(encode_inputs({}, 10, {"embeddings"}, None, 1, None, 0)))
    assert embeddings.expected_output(2048) == 0


def test_a_row_without_inputs_is_approximated_from_its_billed_prompt_and_endpoint() -> None:
    cat = catalog()
    for endpoint, capability in (("chat", "chat"), ("fim", "fim"), ("embeddings", "embeddings"),
                                 ("messages", "chat"), ("completions", "chat"), ("unknown", "chat")):  # fmt: skip
        read = inputs_of(row(cat, "kimi-k2.6", prompt=4_321, endpoint=endpoint, decision=None))
        assert not read.recorded
        assert (read.tokens, read.capabilities, read.counts, read.max_tokens, read.n, read.residency) == (
            4_321,
            {capability},
            {},
            None,
            1,
            None,
        )
    # Unreadable inputs (a hand-edited row) are approximated the same way rather than failing the replay.
    broken = inputs_of(row(cat, "kimi-k2.6", prompt=9, decision='{"counts": 3}'))
    assert not broken.recorded and broken.tokens == 9


def test_residency_is_read_as_routing_reads_the_header() -> None:
    assert residency_regions(None) is None
    assert residency_regions(" EU , onprem,") == ["eu", "onprem"]


def _with(decision: str) -> LedgerRow:
    return row(catalog(), "kimi-k2.6", decision=decision)


def test_the_journal_keeps_the_inputs_and_reads_lines_written_before_them() -> None:
    from dataclasses import asdict

    from gateway.budget.journal import _decode, _encode
    from gateway.store.base import Settlement

    recorded = row(catalog(), "kimi-k2.6")
    assert recorded.decision is not None
    assert _decode(_encode(Settlement(recorded, []))).row == recorded
    # A line journaled by the release before migration 6: no `decision` key at all.
    old = asdict(recorded)
    del old["decision"]
    line = orjson.dumps({"row": old, "scopes": [], "hold": None})
    assert _decode(line).row.decision is None
