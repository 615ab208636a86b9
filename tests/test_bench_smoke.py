"""The benchmark suite, run end to end at tiny sizes, so it never rots.

It checks that every row the suite promises is there and that its numbers are sane (some
throughput, ordered percentiles, complete answers), and that rows for features that have not
landed say so instead of carrying numbers. It does not check speed targets: those depend on
the machine and are for the full run (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
from typing import Any

import pytest

from bench.cli import main
from bench.index_scale import synthetic_identity_numbers
from bench.loadgen import percentile, split
from credgate.core.identity_number import validate
from credgate.gateway.progress import Progress

SMOKE_INDEX_SIZES = (200, 1000)
SMOKE_WORKERS = 2
SMOKE_PROOF_SIZES = (300, 3000)
MEASURED_ROWS = (
    "echo_baseline",
    "sources_alone",
    "direct_fanout",
    "live_query_c1",
    "live_query",
    "batch_query",
    "index_query",
    "audit_append",
    *(f"index_lookup_{size}" for size in SMOKE_INDEX_SIZES),
    *(f"gateway_at_index_{size}" for size in SMOKE_INDEX_SIZES),
    *(f"worker_scaling_{count}" for count in range(1, SMOKE_WORKERS + 1)),
    *(
        f"proofs_sqlite_{kind}_{size}"
        for kind in ("inclusion", "consistency")
        for size in SMOKE_PROOF_SIZES
    ),
)
PENDING_ROWS: tuple[str, ...] = ()
POSTGRES_URL = os.environ.get("CREDGATE_TEST_POSTGRES_URL", "")
POSTGRES_ROWS = (
    "live_query_c1_postgresql",
    "live_query_postgresql",
    "index_query_postgresql",
    "audit_append_postgresql",
)
"""The rows with latencies that run again on PostgreSQL when the run has a PostgreSQL URL (and
``audit_verify_postgresql``, a rate without latencies)."""


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    """One tiny run of the whole suite: 1 s per scenario, 4 in flight, 200 subjects."""
    directory = tmp_path_factory.mktemp("bench")
    results_path = directory / "results.json"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", stdout)
        code = main(
            [
                "--duration", "1",
                "--warmup", "0.3",
                "--concurrency", "4",
                "--processes", "2",
                "--population", "200",
                "--batch-concurrency", "1",
                "--index-sizes", ",".join(str(size) for size in SMOKE_INDEX_SIZES),
                "--lookups", "100",
                "--proof-sizes", ",".join(str(size) for size in SMOKE_PROOF_SIZES),
                "--workers", str(SMOKE_WORKERS),
                "--json", str(results_path),
                "--workdir", str(directory / "work"),
                *(["--postgres-url", POSTGRES_URL] if POSTGRES_URL else []),
            ]
        )  # fmt: skip
    return code, stdout.getvalue(), json.loads(results_path.read_text(encoding="utf-8"))


def _rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in document["rows"]}


def test_the_run_succeeds_and_says_where_and_how(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    code, table, document = smoke_run
    assert code == 0, table
    assert document["command"].startswith("python -m bench --duration 1")
    assert document["machine"]["cpu_count"] >= 1
    assert "CPU cores" in table
    assert document["command"] in table


def test_every_measured_row_has_sane_numbers(smoke_run: tuple[int, str, dict[str, Any]]) -> None:
    _, table, document = smoke_run
    rows = _rows(document)
    for row_id in MEASURED_ROWS + (POSTGRES_ROWS if POSTGRES_URL else ()):
        row = rows[row_id]
        assert row["status"] == "ok", row
        assert row["qps"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
        assert row["requests"] > 0, row
        assert row["errors"] == 0, row
        assert row["partial"] == 0, row
        assert row["title"] in table


def test_ratios_cpu_overhead_and_memory_are_reported(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    rows = _rows(smoke_run[2])
    assert rows["echo_baseline"]["vs_echo"] == 1.0
    assert 0 < rows["live_query"]["vs_echo"] < math.inf
    assert 0 < rows["index_query"]["vs_echo"] < math.inf
    assert rows["index_query"]["metrics"]["server_cpu_ms_per_call"] > 0
    for row_id in ("echo_baseline", "live_query", "batch_query"):
        assert rows[row_id]["metrics"]["server_cpu_ms_per_call"] > 0
    assert isinstance(rows["live_query"]["metrics"]["overhead_p50_ms"], float)
    for baseline in ("overhead_p50_vs_sources_alone_ms", "overhead_p50_vs_direct_ms"):
        # over what the sources alone and the direct fan-out took in the same run
        assert isinstance(rows["live_query_c1"]["metrics"][baseline], float)
    alone, direct = rows["sources_alone"], rows["direct_fanout"]
    assert alone["requests"] > 0
    live_c1 = rows["live_query_c1"]
    assert live_c1["metrics"]["overhead_p50_vs_sources_alone_ms"] == pytest.approx(
        live_c1["p50_ms"] - alone["p50_ms"]
    )
    assert live_c1["metrics"]["overhead_p50_vs_direct_ms"] == pytest.approx(
        live_c1["p50_ms"] - direct["p50_ms"]
    )
    for size in SMOKE_INDEX_SIZES:
        assert rows[f"gateway_at_index_{size}"]["metrics"]["gateway_rss_mib"] > 0
        lookup = rows[f"index_lookup_{size}"]["metrics"]
        assert lookup["subjects"] == size
        assert lookup["facts_per_lookup"] == 8.0


def test_worker_rows_scale_from_one_worker_with_cpu_over_all_workers(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    rows = _rows(smoke_run[2])
    one = rows["worker_scaling_1"]
    assert one["metrics"]["vs_one_worker"] == 1.0
    for count in range(1, SMOKE_WORKERS + 1):
        row = rows[f"worker_scaling_{count}"]
        metrics = row["metrics"]
        assert metrics["workers"] == count
        assert metrics["server_cpu_ms_per_call"] > 0  # summed over every worker process
        assert 0 < row["vs_echo"] < math.inf
        assert metrics["vs_one_worker"] == row["qps"] / one["qps"]
        assert metrics["client_connections"] >= count
    shares = rows[f"worker_scaling_{SMOKE_WORKERS}"]["metrics"]["worker_cpu_share"]
    assert len(shares) == SMOKE_WORKERS
    # Shares are CPU clock ticks (10 ms) over the smoke's short window: a worker the kernel gave
    # no connection may stay under one tick on a loaded machine, so only the split is checked
    # here; that every worker answers is tests/test_workers.py's.
    assert all(share >= 0 for share in shares)
    assert math.isclose(sum(shares), 1.0)


def test_audit_verify_reports_entries_per_second(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    rows = _rows(smoke_run[2])
    for suffix in ("", "_postgresql") if POSTGRES_URL else ("",):
        verify = rows["audit_verify" + suffix]
        assert verify["status"] == "ok", verify
        assert verify["qps"] > 0
        assert verify["metrics"]["entries"] >= rows["audit_append" + suffix]["requests"] > 0
        assert verify["metrics"]["cpu_us_per_entry"] > 0


def test_ingest_reports_durable_updates_per_second(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    rows = _rows(smoke_run[2])
    targets = {target["id"]: target for target in smoke_run[2]["targets"]}
    backends = ("sqlite", "postgresql") if POSTGRES_URL else ("sqlite",)
    for backend in backends:
        row = rows[f"sync_ingest_{backend}"]
        assert row["status"] == "ok", row
        assert row["qps"] > 0
        assert row["requests"] == row["metrics"]["updates"] > 0
        assert targets[f"sync_ingest_{backend}"]["measured"] == row["qps"]
        # The batched form is the target's row; the per-update form runs beside it, on the
        # same history, so the gain is a ratio within one run.
        assert row["metrics"]["batch_size"] == 256
        old_form = rows[f"sync_ingest_per_update_{backend}"]
        assert old_form["status"] == "ok", old_form
        assert old_form["metrics"]["batch_size"] == 0
        assert old_form["requests"] == row["requests"]
        assert row["metrics"]["ratio_to_per_update"] == pytest.approx(row["qps"] / old_form["qps"])
    if not POSTGRES_URL:
        for row_id in ("sync_ingest_postgresql", "sync_ingest_per_update_postgresql"):
            row = rows[row_id]
            assert row["status"] == "not_yet_available"
            assert row["qps"] is None
            assert "--postgres-url" in row["note"]


def test_features_not_yet_built_are_listed_without_numbers(
    smoke_run: tuple[int, str, dict[str, Any]],
) -> None:
    _, table, document = smoke_run
    rows = _rows(document)
    for row_id in PENDING_ROWS:
        row = rows[row_id]
        assert row["status"] == "not_yet_available"
        assert row["qps"] is None
        assert row["p50_ms"] is None
        assert "not yet available (issue #" in row["note"]
    assert table.count("not yet available") >= len(PENDING_ROWS)


def test_targets_stand_beside_measurements(smoke_run: tuple[int, str, dict[str, Any]]) -> None:
    targets = {target["id"]: target for target in smoke_run[2]["targets"]}
    for measured in (
        "live_overhead_p50",
        "live_overhead_p50_c1",
        "live_overhead_p50_c1_vs_sources_alone",
        "live_overhead_p50_c1_vs_direct",
        "index_query_vs_echo",
        "audit_verify",
        "lookup_scale_p50",
        "gateway_rss_scale",
        "proofs_sqlite_inclusion",
        "proofs_sqlite_consistency",
    ):
        assert targets[measured]["measured"] is not None
        assert targets[measured]["met"] in (True, False)
    assert targets["sync_ingest_sqlite"]["measured"] is not None
    if POSTGRES_URL:
        for measured in (
            "index_query_postgresql_vs_echo",
            "live_overhead_p50_c1_postgresql",
            "audit_verify_postgresql",
        ):
            assert targets[measured]["measured"] is not None
    else:
        assert not any(
            row_id in _rows(smoke_run[2]) for row_id in (*POSTGRES_ROWS, "audit_verify_postgresql")
        )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_clients_are_spread_evenly_over_processes() -> None:
    assert split(16, 3) == [6, 5, 5]
    assert split(4, 4) == [1, 1, 1, 1]


def test_synthetic_subjects_are_valid_distinct_and_born_after_the_population() -> None:
    numbers = list(synthetic_identity_numbers(3000))
    assert len(set(numbers)) == 3000
    assert all(validate(number) is None for number in numbers)
    assert all(number[6:10] >= "2002" for number in numbers)


def test_seeding_progress_is_the_shared_one_silent_off_a_terminal_unless_asked() -> None:
    """The bench seeds through ``gateway.progress.Progress`` (tested in test_cli.py): a CI log
    gets no seeding progress unless ``python -m bench --progress`` asks, and then plain lines."""
    from bench.cli import add_arguments
    from bench.suite import BenchSettings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).progress is None
    assert parser.parse_args(["--progress"]).progress is True
    assert BenchSettings().progress is None
    stream = io.StringIO()
    with Progress("seeding", 100, enabled=BenchSettings().progress, stream=stream) as progress:
        progress.update(100)
    assert stream.getvalue() == ""
