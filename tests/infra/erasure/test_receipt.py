"""The receipt's short form: what each store changed."""

from infra.erasure.receipt import StoreReport


def test_a_store_of_whole_files_counts_the_files_it_rewrote():
    assert StoreReport("redis_files", files_rewritten=["redis/appendonly.aof", "redis/dump.rdb"]).touched == 2
    assert StoreReport("lake", files_rewritten=["a.parquet"], rows_removed=5).touched == 5  # rows, not files
