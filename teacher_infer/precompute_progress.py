"""Progress display for `run_precompute`: one rich bar per corpus (sequences, tokens/s, ETA)."""

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

from logit_store import Unit
from teacher_infer.plan import PlannedCorpus


class UnitProgress:
    """Context manager; `ticker(corpus)` returns the per-batch callback for `compute_unit`.

    Totals count only the sequences of units this process will compute (pending, its rank's).
    """

    def __init__(
        self,
        planned: list[PlannedCorpus],
        work: dict[str, list[Unit]],
        console: Console,
        enabled: bool,
    ) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("seq"),
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
        for corpus in planned:
            total = sum(u.stop - u.start for u in work[corpus.name])
            self.tasks[corpus.name] = self.progress.add_task(corpus.name, total=total, rate="-")
            self.tokens[corpus.name] = 0

    def __enter__(self) -> UnitProgress:
        self.progress.start()
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
        self.started.setdefault(corpus, time.perf_counter())

        def tick(n_sequences: int, n_tokens: int) -> None:
            self.tokens[corpus] += n_tokens
            elapsed = max(time.perf_counter() - self.started[corpus], 1e-9)
            rate = f"{self.tokens[corpus] / elapsed:,.0f}"
            self.progress.update(task, advance=n_sequences, rate=rate)

        return tick
