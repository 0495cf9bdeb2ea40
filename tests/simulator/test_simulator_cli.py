from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from simulator.__main__ import main


def test_cli_writes_the_four_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERLIFT_SIM_USERS", "200")
    monkeypatch.setenv("HYPERLIFT_SIM_DAYS", "2")
    assert main(["--out", str(tmp_path), "--quiet"]) == 0
    events = pd.read_parquet(tmp_path / "events.parquet")
    assert pd.read_parquet(tmp_path / "users.parquet").shape[0] == 200
    assert pd.read_parquet(tmp_path / "items.parquet").shape[0] == 500
    assert pd.read_parquet(tmp_path / "actions.parquet").shape[0] == 9
    assert str(events["ts"].dtype) == "datetime64[ns, UTC]" and str(events["user_id"].dtype) == "Int64"
    out = capsys.readouterr().out
    assert "promo_exposure" in out and "oracle" in out
