"""The precompute progress bar: records and tokens/s per corpus, with an ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class UnitProgress:
    """Context manager; `ticker(corpus)` returns the per-unit callback (records, tokens).

    Totals count only the source records of units this process will compute (pending, its
    rank's): `work` maps corpus -> records per unit.
    """

    def __init__(self, work: dict[str, list[int]], console: Console, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("records"),
            TextColumn("{task.fields[rate]:>10} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}
        self.tokens: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.last_tick = time.perf_counter()
        for name, units in work.items():
            total = sum(units)
            self.tasks[name] = self.progress.add_task(name, total=total, rate="-")
            self.tokens[name] = 0

    def __enter__(self) -> UnitProgress:
        self.progress.start()
        self.last_tick = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def ticker(self, corpus: str) -> Callable[[int, int], None]:
        task = self.tasks[corpus]

        def tick(n_records: int, n_tokens: int) -> None:
            # a corpus's clock starts when the unit before its first one ended (or at the start)
            now = time.perf_counter()
            started = self.started.setdefault(corpus, self.last_tick)
            self.last_tick = now
            self.tokens[corpus] += n_tokens
            rate = f"{self.tokens[corpus] / max(now - started, 1e-9):,.0f}"
            self.progress.update(task, advance=n_records, rate=rate)

        return tick
