"""Fixtures of the unit tests (helpers they share are in ``producer_fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producer import ProducerOptions
from tests.unit.producer_fakes import (
    UNREACHABLE_API,
    FakeApi,
    FakeWorkspace,
    MemoryKafka,
    MemoryWorkspace,
    options,
)


@pytest.fixture
def kafka() -> MemoryKafka:
    return MemoryKafka()


@pytest.fixture
def make_workspace(tmp_path: Path, kafka: MemoryKafka) -> Iterator[Callable[..., MemoryWorkspace]]:
    made: list[MemoryWorkspace] = []

    def make(home: Path | None = None, **opts: Any) -> MemoryWorkspace:
        ws = MemoryWorkspace(
            kafka, home=home or tmp_path / "home", api_url=UNREACHABLE_API, options=options(**opts)
        )
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close(5.0)


@pytest.fixture
def ws(make_workspace: Callable[..., MemoryWorkspace]) -> MemoryWorkspace:
    return make_workspace()


@pytest.fixture
def make_ws(tmp_path: Path) -> Iterator[Callable[..., FakeWorkspace]]:
    made: list[FakeWorkspace] = []

    def make(fake: FakeApi, **opts: Any) -> FakeWorkspace:
        options = ProducerOptions(linger_ms=5, heartbeat_interval_s=3600.0, **opts)
        ws = FakeWorkspace(fake, home=tmp_path / "home", options=options)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close(5.0)
