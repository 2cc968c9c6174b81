"""`veil bench trail` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.cli._app import main

TINY = [
    "--entries",
    "2000",
    "--actions",
    "20",
    "--workers",
    "2",
    "--per-worker",
    "20",
    "--grants",
    "200",
    "--checks",
    "2000",
]


@pytest.mark.slow
def test_bench_trail_writes_json_and_tables(tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = main(["bench", "trail", *TINY, "-o", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["benchmark"] == "trail"
    assert report["parameters"]["backends"] == ["sqlite"]
    (row,) = report["results"]
    assert row["backend"] == "sqlite"

    overhead = row["overhead"]
    assert overhead["actions"] == 20
    assert 0 < overhead["off_p50_ms"] <= overhead["off_p99_ms"]
    assert 0 < overhead["on_p50_ms"] <= overhead["on_p99_ms"]
    assert overhead["added_p99_ms"] == pytest.approx(overhead["on_p99_ms"] - overhead["off_p99_ms"])

    verify = row["verify"]
    assert verify["entries"] == 2000
    assert verify["ok"] is True
    assert verify["problems"] == 0
    assert verify["signed_heads"] == 1  # one head every 1,024 entries

    proofs = {p["entry"]: p for p in row["proofs"]}
    assert set(proofs) == {1, 2000}
    for proof in proofs.values():
        assert proof["tree_size"] == 2000
        assert proof["verified"] is True
        assert proof["path_bytes"] == 32 * proof["path_hashes"]
        assert proof["document_bytes"] > proof["path_bytes"] + proof["body_bytes"]
    # The audit path of the first leaf of 2,000 climbs the full height: ceil(log2(2000)) = 11.
    assert proofs[1]["path_hashes"] == 11

    concurrency = row["concurrency"]
    assert concurrency["workers"] == 2
    assert concurrency["per_worker"] == 20
    # trail.start, the owner's claim, two grants, then every worker's every action.
    assert concurrency["setup_entries"] == 4
    assert concurrency["size"] == concurrency["expected_size"] == 4 + 2 * 20
    assert concurrency["per_worker_counts"] == {"worker-0": 20, "worker-1": 20}
    assert concurrency["all_present"] is True
    assert concurrency["contiguous"] is True
    assert concurrency["verify_ok"] is True
    assert concurrency["met"] is True

    roles = row["roles"]
    assert roles["grants"] == 200 + 1  # the seeded grants and the owner's claim
    assert roles["checks"] == 2000
    assert 0 < roles["require_p50_us"] <= roles["require_p99_us"] <= roles["require_max_us"]
    assert 0 < roles["denied_share"] < 1
    assert roles["refresh_p50_ms"] > 0

    assert report["reference"]["source"].startswith("https://github.com/")
    for title in ("Recording overhead", "veil trail verify", "Inclusion proofs", "Role checks"):
        assert title in captured.out


def test_bench_trail_refuses_sizes_below_one(tmp_path, capsys):
    code = main(["bench", "trail", "--entries", "0", "-o", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "entries=0" in captured.err
    assert not (tmp_path / "b.json").exists()
