"""``neurorad demo``, the README's main command, end to end on its phantom pair (generated into a temporary
cache here): the decision and the result.json keys every ``neurorad <workflow>`` writes, checked against the
phantom's own truth (3 new lesions and 1 enlarging one)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from neurorad.cli import app


@pytest.mark.slow
def test_demo_runs_the_ms_workflow_and_writes_the_contract_keys(tmp_path, monkeypatch):
    from neurorad.cli import demo as demo_cli

    original = demo_cli.demo_pair
    monkeypatch.setattr(demo_cli, "demo_pair", lambda cache=None: original(tmp_path / "cache"))
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "decision: ACTIVE" in r.output and "gadolinium: RECOMMENDED" in r.output
    d = json.loads((tmp_path / "out" / "ms-lesions" / "result.json").read_text())
    assert d["workflow"] == "ms-lesions"
    q = {x["name"]: x["value"] for x in d["quantities"]}
    assert q["new_lesions"] == 3 and q["enlarging_lesions"] == 1  # the phantom's truth (seed 7)
    assert q["gadolinium"] == "RECOMMENDED" and q["gadolinium_recommended"] is True and q["unresolved_regions"] == 0
    assert (tmp_path / "out" / "ms-lesions" / "report.pdf").stat().st_size > 0
