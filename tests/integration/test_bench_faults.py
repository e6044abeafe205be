"""``run_fault_bench`` (behind ``runstream bench faults``) on the local stack: its ledger
counts every point through a worker SIGKILL and a rebalance, and says so."""

from __future__ import annotations

import pytest

from ingest.bench.faults import run_fault_bench
from tests.helpers import StackInfo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_fault_bench_counts_every_point_through_a_kill_and_a_rebalance(
    stack: StackInfo,
) -> None:
    messages: list[str] = []
    result = await run_fault_bench(stack.settings, dsn=stack.db_dsn, worker_kills=1,
                                   rebalances=1, ticks=120, progress=messages.append)
    assert result["ok"], result
    assert result["faults"] == {"worker_kill9": 1, "worker_joins": 1, "worker_leaves": 1}
    assert result["faults_injected"] == 3
    assert (result["lost"], result["doubled"], result["missing_events"]) == (0, 0, 0)
    assert result["points"] == result["points_expected"] >= 120 * 100 * 2 * 4
    assert result["statuses"] == {"parent": "Completed", "a": "Failed", "b": "Canceled",
                                  "c": "Completed"}
    assert len(messages) == 3
    print(f"bench faults: {result}")
