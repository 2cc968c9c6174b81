"""The one atomic writer and the one JSON convention."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from veil import _io
from veil._io import (
    atomic_path,
    dumps,
    float_from_json,
    open_atomic_text,
    to_jsonable,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_bytes_text_and_json(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "b.txt", "héllo")
    write_json_atomic(tmp_path / "c.json", {"x": 1})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == '{\n  "x": 1\n}\n'


def test_owner_only_by_default_and_mode_on_request(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "secret", "s")
    write_bytes_atomic(tmp_path / "public.pem", b"p", mode=0o644)
    assert _mode(tmp_path / "secret") == 0o600
    assert _mode(tmp_path / "public.pem") == 0o644


def test_mode_none_is_what_open_would_give(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "shared.txt", "x", mode=None)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "shared.txt") == 0o640


def test_the_mode_is_set_before_anything_is_written(tmp_path: Path) -> None:
    with open_atomic_text(tmp_path / "key") as stream:
        temporary = Path(stream.name)
        assert _mode(temporary) == 0o600
        assert temporary.parent == tmp_path  # same directory: the rename stays on one disk
        stream.write("secret")


def test_makes_missing_parents(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text(encoding="utf-8") == "x"


def test_a_crash_before_the_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")

    def crash(*args: object) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        write_text_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left


def test_an_error_while_writing_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "codebook.yaml"
    target.write_text("old", encoding="utf-8")

    def interrupted() -> None:
        with open_atomic_text(target) as stream:
            stream.write("half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codebook.yaml"]


def test_a_library_that_writes_a_path_gets_the_same_guarantee(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with atomic_path(target) as temporary:
        temporary.write_text("a,b\n1,2\n", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "a,b\n1,2\n"
    assert _mode(target) == 0o600


def test_the_file_and_its_directory_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    target = tmp_path / "card.json"
    write_json_atomic(target, {"epsilon": 1.0})
    assert len(synced) == 2  # the file, then the directory
    assert Path(synced[0]).parent == tmp_path  # the temporary file, before the rename
    assert synced[0] != str(target)
    assert synced[1] == str(tmp_path)


def test_the_directory_fsync_is_skipped_where_directories_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_directories(path: str, flags: int, *args: int) -> int:
        if Path(path).is_dir():
            raise OSError("not here")
        return real_open(path, flags, *args)

    monkeypatch.setattr(_io.os, "open", no_directories)
    write_text_atomic(tmp_path / "x", "y")
    assert (tmp_path / "x").read_text(encoding="utf-8") == "y"


# ---------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("value", "written"),
    [(math.inf, '"inf"'), (-math.inf, '"-inf"'), (math.nan, '"nan"'), (1.5, "1.5")],
)
def test_infinity_and_nan_are_written_one_way_and_read_back(value: float, written: str) -> None:
    text = dumps({"epsilon": value})
    assert text == '{"epsilon": ' + written + "}"
    back = float_from_json(json.loads(text)["epsilon"])
    assert back == value or (math.isnan(back) and math.isnan(value))


@pytest.mark.parametrize(
    ("old", "value"),
    [("Infinity", math.inf), ("-Infinity", -math.inf), ("INF", math.inf), (3, 3.0)],
)
def test_older_spellings_are_still_read(old: object, value: float) -> None:
    assert float_from_json(old) == value


def test_bare_infinity_tokens_from_older_writers_are_read() -> None:
    assert float_from_json(json.loads('{"e": Infinity}')["e"]) == math.inf


@pytest.mark.parametrize("bad", [None, True, "lots", [1.0]])
def test_not_a_number_is_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        float_from_json(bad)


def test_to_jsonable_turns_numpy_tuples_and_unknowns_into_json() -> None:
    value = {
        "count": np.int64(3),
        "rate": np.float32(0.5),
        "ok": np.bool_(1),
        "grid": np.array([[1.0, np.inf]]),
        "pair": (1, -math.inf),
        "path": Path("reports/x.json"),
        "nested": [{"nan": math.nan}],
    }
    assert to_jsonable(value) == {
        "count": 3,
        "rate": 0.5,
        "ok": True,
        "grid": [[1.0, "inf"]],
        "pair": [1, "-inf"],
        "path": "reports/x.json",
        "nested": [{"nan": "nan"}],
    }


def test_dumps_never_writes_a_bare_infinity() -> None:
    text = dumps([math.inf, np.float64("-inf")], indent=1)
    assert "Infinity" not in text
    assert json.loads(text) == ["inf", "-inf"]
