"""bench.lake_fold on a small shop: the snapshots from the fold equal those of every tile, and the table is printed
(not written: no --write)."""

from __future__ import annotations

from bench import lake_fold


def test_the_bench_checks_the_fold_and_prints_its_table(capsys, monkeypatch):
    monkeypatch.setattr(lake_fold, "KEEP_DAYS", 20)
    assert lake_fold.main(["--users", "300", "--days", "40", "--allowed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Snapshots from the fold equal those from every tile bit for bit: True." in out
    assert "| fold the expiring partitions (retention) |" in out and "in 20 partitions" in out
    assert "recorded in docs/benchmarks.md" not in out
