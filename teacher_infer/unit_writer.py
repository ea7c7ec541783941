"""Units written by background threads fed by a bounded queue: the device never waits for
encoding, compression or storage, and host memory holds at most `WRITE_QUEUE_DEPTH` units."""

from __future__ import annotations

import queue
import threading

from logit_store import StoreWriter, Unit, UnitData

WRITE_QUEUE_DEPTH = 4  # units computed but not yet written (bounds host memory)
# On a GPU, host cores are free for compression; on a CPU every writer thread takes a core
# from the teacher, so one is enough to overlap I/O.
WRITER_THREADS = {"cuda": 3, "cpu": 1}


class BackgroundWriter:
    """Writes units on threads fed by a bounded queue; a write error resurfaces on put/close.

    Units own disjoint shards, so several threads can write different units at once; encoding
    (numpy sorts) and compression (blosc, zstd) release the GIL for most of their time.
    """

    def __init__(self, writer: StoreWriter, threads: int, depth: int = WRITE_QUEUE_DEPTH) -> None:
        self.writer = writer
        self.queue: queue.Queue[tuple[Unit, UnitData] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._loop, name=f"kdcache-writer-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_unit(*item)
                except BaseException as err:  # re-raised on the compute thread
                    self.error = err

    def put(self, unit: Unit, data: UnitData) -> None:
        self._raise()
        self.queue.put((unit, data))

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
