"""benchmarks/train_time.py: times the fits of each mode and says which have a target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import _require_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_time  # noqa: E402


@pytest.mark.realdata
def test_train_time_times_an_unlabelled_fit_without_a_target(tmp_path, capsys):
    _require_data()
    out = tmp_path / "t.json"
    assert train_time.main(["--n", "600", "--threads", "1", "--modes", "unsupervised,unlabelled",
                            "--json", str(out)]) == 0
    recs = {r["mode"]: r for r in json.loads(out.read_text())["records"]}
    assert recs["unsupervised"]["target_s"] == 60.0 and recs["unsupervised"]["met"] in (True, False)
    assert recs["unlabelled"]["target_s"] is None and recs["unlabelled"]["met"] is None
    assert "no target" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_time.main(["--n", "600", "--modes", "semi", "--json", str(out)])
