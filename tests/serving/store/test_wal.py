"""The write-ahead file: lines that prove their integrity, folders locked by their process and adopted after it,
counters that survive it, segments released only up to the lake's receipt."""

import json
import os
from pathlib import Path

from serving.store.wal import (
    MARKER, RECORD, SEGMENT_SUFFIX, Entry, WriterLog, _line, destination_dir, leftovers, parse,
)

OFFERED = 0


def payload(i: int) -> bytes:
    return json.dumps({"decision_id": f"d{i}"}).encode()


def test_parse_skips_a_damaged_line_and_stops_at_a_torn_tail():
    good = [_line(RECORD, 1, payload(1)), _line(RECORD, 2, payload(2)), _line(MARKER, 2, b'{"sent": 2}')]
    damaged = good[1].replace(b"d2", b"dX")
    buffer = good[0] + damaged + good[2] + _line(RECORD, 3, payload(3))[:-5]  # the last write cut short
    entries = list(parse(buffer))
    assert [e.seq if isinstance(e, Entry) else "damaged" for e in entries] == [1, "damaged", 2]
    assert entries[1] == len(good[0]) and entries[2].kind == MARKER


def test_destination_folders_name_the_database_and_stream_not_the_port_of_an_embedded_server():
    root = Path("/w")
    assert destination_dir(root, "redis://:s3cret@cache.local:6380/2", "hyperlift:decisions") == \
        root / "db2-hyperlift_decisions"
    assert destination_dir(root, "redis://127.0.0.1:41234", "s") == destination_dir(root, "redis://127.0.0.1:5999/0", "s")


def test_a_live_folder_is_not_adopted_and_a_finished_one_is_with_its_unwritten_records_counted(tmp_path):
    wal = WriterLog.create(tmp_path, segment_bytes=1 << 20)
    for _ in range(10):
        wal.counters.add(OFFERED)  # ten requests handed records over ...
    wal.append([payload(i) for i in range(7)], {"sent": 4, "run_id": "abc"})  # ... seven reached the file
    assert leftovers(tmp_path, 1 << 20) == []  # its process (this one) still holds the lock
    os.close(wal._lock_fd)  # the process "dies": the kernel drops its lock
    wal._lock_fd = None
    (adopted,) = leftovers(tmp_path, 1 << 20)
    assert (adopted.writer_id, adopted.last, adopted.marker) == (wal.writer_id, 7, {"sent": 4, "run_id": "abc"})
    assert adopted.unwritten_at_exit() == 3
    assert leftovers(tmp_path, 1 << 20) == []  # one adopter at a time
    assert [seq for seq, _ in adopted.read(4, 100, 1 << 20)] == [5, 6, 7]


def test_segments_rotate_and_are_released_only_up_to_the_receipt_never_the_active_one(tmp_path):
    wal = WriterLog.create(tmp_path, segment_bytes=200)
    for batch in range(4):
        wal.append([payload(batch * 2), payload(batch * 2 + 1)], {"sent": 0, "run_id": None})
    assert wal.firsts == [1, 3, 5, 7] and wal.last == 8
    wal.acked = 4
    assert wal.release() == 4 and wal.firsts == [5, 7] and wal.pending_records == 4
    wal.acked = 8
    assert wal.release() == 2 and wal.firsts == [7]  # the active segment stays for the next batch
    assert sorted(p.name for p in wal.path.glob(f"*{SEGMENT_SUFFIX}")) == [f"seg-{7:020d}{SEGMENT_SUFFIX}"]
    wal.close()


def test_records_read_back_across_segments_and_missing_ones_become_a_floor(tmp_path):
    wal = WriterLog.create(tmp_path, segment_bytes=200)
    for batch in range(3):
        wal.append([payload(batch * 2), payload(batch * 2 + 1)], {"sent": 0, "run_id": None})
    middle = wal.path / f"seg-{3:020d}{SEGMENT_SUFFIX}"
    middle.write_bytes(middle.read_bytes().replace(b"d2", b"dX"))  # seq 3 damaged
    assert [seq for seq, _ in wal.read(0, 100, 1 << 20)] == [1, 2, 4, 5, 6]
    assert wal.lost == [(3, 3)] and wal.floor() == 0
    wal.acked = 2
    assert wal.floor() == 3  # nothing to wait for at 3: the drain may step over it
    wal.close()
