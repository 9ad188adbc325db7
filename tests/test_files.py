"""The files between stages (`ckptsweep.files`): jsonl records and atomic writes."""

import json

import pytest

from ckptsweep.files import atomic_write, read_jsonl, write_jsonl


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": "b",}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: bad JSON"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]


def test_write_jsonl_round_trips_unicode_as_utf8(tmp_path):
    records = [{"id": 1, "text": "Zoë — naïve"}, {"id": 2, "text": ""}]
    path = tmp_path / "deep" / "out.jsonl"
    assert write_jsonl(path, records) == 2
    assert path.read_bytes() == "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                        for r in records).encode()
    assert read_jsonl(path) == records


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"id": 1}])

    def broken():
        yield {"id": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_jsonl(path, broken())
    assert read_jsonl(path) == [{"id": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "x.txt", lambda tmp: (tmp.write_text("half"), 1 / 0))
    assert not (tmp_path / "x.txt").exists()
