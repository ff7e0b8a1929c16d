"""Policy replay (issue 17): what other routing policies would have done to the traffic in the ledger.

    policies = policy_set_from_text("eu-only.yaml", text, catalog, gateway.policy_set())   # or load_replay_policies
    report = await replay(store, catalog, policies, team=None, since=t0, until=None, default_expected_output=1024)
    report.as_dict()       # JSON (POST /admin/replay, `gateway replay --format json`)
    report.as_csv()        # CSV (`--format csv`)

Each ledger row records what the routing decision read (`inputs`, written by the pipeline's settlement: counted
prompt tokens per model, capabilities, max_tokens, n, residency; no prompt text). `engine.replay` runs the pure
decision (`gateway.routing.decide`) with the new policies over those rows and compares it with what happened; it
never calls a provider and never writes to the ledger or anywhere else.

`ReplayReport.as_dict()`:

    {"object": "policy_replay", "generated_at": ISO,
     "policies": {"source": str, "names": [str]},
     "filters": {"team": str|null, "since": ISO, "until": ISO|null}, "default_expected_output": int,
     "rows": {"replayed", "approximated", "refused", "changed_model", "moved_region", "over_budget": int,
              "skipped": {"batch_line"|"team_deleted": int}},
     "cost": {"before_usd", "after_usd", "delta_usd": str, "before_nanos", "after_nanos", "delta_nanos": int,
              "delta_pct": float|null},
     "models": [{"model", "provider", "region", "requests_before", "requests_after",
                 "cost_before_usd", "cost_after_usd", "cost_before_nanos", "cost_after_nanos"}],
     "providers": [{"provider", "region", ...the same figures}],
     "model_moves": [{"from": model, "to": model|"(refused)", "requests"}],
     "region_moves": [{"from": region, "to": region, "requests"}],          (only rows whose region changed)
     "refused": [{"code", "status", "requests", "examples": [{"id", "ts", "team", "key_prefix", "requested_model",
                  "model", "endpoint", "message"}]}],                          (at most 5 examples per code)
     "teams": [{"team", "policy", ...the same figures, "refused", "changed_model", "moved_region",
                "over_budget", "over_budget_from": ISO|null}]}

Lists are sorted by their names. Money: `*_usd` exact decimal strings, `*_nanos` integers.
"""

from gateway.replay.engine import replay
from gateway.replay.inputs import DecisionInputs, encode_inputs, inputs_of
from gateway.replay.policies import load_replay_policies, policy_set_from_text
from gateway.replay.report import ReplayReport, report_csv
from gateway.replay.service import replay_request

__all__ = [
    "DecisionInputs",
    "ReplayReport",
    "encode_inputs",
    "inputs_of",
    "load_replay_policies",
    "policy_set_from_text",
    "replay",
    "replay_request",
    "report_csv",
]
