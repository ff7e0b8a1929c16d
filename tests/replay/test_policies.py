"""The policies a replay runs with (gateway/replay/policies.py and service.py): one file into the current set, a
directory or a set of files instead, each validated as the gateway validates policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, load_policies
from gateway.replay import load_replay_policies, policy_set_from_text
from gateway.replay.service import policy_set_from_files
from tests.replay.rows import catalog

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_a_policy_text_is_added_to_the_current_set_or_replaces_its_namesake() -> None:
    cat = catalog()
    current = load_policies(REPO_POLICIES, cat)
    added = policy_set_from_text("strict.yaml", "models: [codestral]\n", cat, current)
    assert sorted(added) == ["cost-saver", "default", "eu-only", "strict"]
    assert added["strict"].models == ("codestral",) and added["default"] is current["default"]
    replaced = policy_set_from_text("default", "prefer: [kimi-k2.6]\n", cat, current)
    assert replaced["default"].prefer == ("kimi-k2.6",) and replaced["eu-only"] is current["eu-only"]
    assert replaced.directory.endswith("with default.yaml")
    # Without a file name, the text's own name.
    named = policy_set_from_text("", "name: eu-next\nregions: [eu]\n", cat, current)
    assert "eu-next" in named and sorted(current) == ["cost-saver", "default", "eu-only"]  # current untouched


def test_an_invalid_policy_is_refused_naming_the_file_and_each_field() -> None:
    cat = catalog()
    current = load_policies(REPO_POLICIES, cat)
    with pytest.raises(PolicyError) as caught:
        policy_set_from_text("eu-next.yaml", "models: [gpt-5]\nregions: [mars]\n", cat, current)
    text = str(caught.value)
    assert "eu-next.yaml: models[0]: unknown model 'gpt-5'" in text
    assert "eu-next.yaml: regions[0]: unknown region 'mars'" in text
    with pytest.raises(PolicyError, match="is 'other' but the file is eu-next.yaml"):
        policy_set_from_text("eu-next.yaml", "name: other\n", cat, current)
    with pytest.raises(PolicyError, match="name: a policy given without a file name needs its `name:` field"):
        policy_set_from_text("", "regions: [eu]\n", cat, current)
    with pytest.raises(PolicyError, match="not valid YAML"):
        policy_set_from_text("x", "models: [a\n", cat, current)


def test_a_file_or_a_directory(tmp_path: Path) -> None:
    cat = catalog()
    current = load_policies(REPO_POLICIES, cat)
    one = tmp_path / "eu-only.yaml"
    one.write_text("models: [mistral-medium-3.5]\nregions: [eu]\n")
    from_file = load_replay_policies(one, cat, current)
    assert from_file["eu-only"].models == ("mistral-medium-3.5",) and "cost-saver" in from_file
    directory = tmp_path / "next"
    directory.mkdir()
    (directory / "default.yaml").write_text("prefer: [kimi-k2.6]\n")
    from_dir = load_replay_policies(directory, cat, current)
    assert sorted(from_dir) == ["default"]  # the whole set replaced
    (directory / "default.yaml").unlink()
    with pytest.raises(PolicyError, match="no default.yaml"):
        load_replay_policies(directory, cat, current)
    with pytest.raises(PolicyError, match="cannot read file"):
        load_replay_policies(tmp_path / "missing.yaml", cat, current)


def test_a_set_of_files_is_validated_as_a_directory() -> None:
    cat = catalog()
    files = {"default.yaml": "prefer: [kimi-k2.6]\n", "eu.yaml": "regions: [eu]\n"}
    assert sorted(policy_set_from_files(files, cat, "(files)")) == ["default", "eu"]
    with pytest.raises(PolicyError, match="no default.yaml"):
        policy_set_from_files({"eu.yaml": "regions: [eu]\n"}, cat, "(files)")
    with pytest.raises(PolicyError, match="default.yaml: prefer\\[0\\]: unknown model 'nope'"):
        policy_set_from_files({"default.yaml": "prefer: [nope]\n"}, cat, "(files)")
