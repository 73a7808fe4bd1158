"""`toolgate_ocsf_file`: each call's OCSF events (`sessions.ocsf`) appended as JSON lines to a
file that a log shipper tails, as calls are recorded.

The recorder hands over each call's final record with the writer's Future for it; the events
are queued once the record is kept (made durable under audit, committed under async). A record
the store did not keep is not streamed, so the file holds what `toolgate sessions export
--format ocsf` writes for the same calls (calls recovered as `interrupted` at start are only in
the export: they were never handed over).

A background thread does the rest, never the event loop: it takes records from a bounded queue
(a full queue drops the record, counted and logged), builds their events and appends them in
one write per batch. The file only grows by whole lines, so a shipper never reads half of one:
a write cut short (disk full) is cut back off. The file is created 0600 and opened for
appending; it is reopened when it was moved or removed (log rotation), which is checked
before each write. A failed write is logged once per failing spell and counted
(`health()`); calls never notice.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from toolgate.sessions import ocsf
from toolgate.sessions.query import body_json
from toolgate.sessions.records import CallRecord, finding_dicts
from toolgate.sessions.timeparse import iso_us
from toolgate.sessions.writer import call_values

logger = logging.getLogger(__name__)

MAX_QUEUE = 10_000  # records waiting for the thread; past it they are dropped, not waited for
BATCH = 256  # records written with one write
CLOSE_WAIT = 10.0

_STOP = object()


def call_row(record: CallRecord, node: str | None = None) -> dict[str, Any]:
    """A call record as the admin API's `/api/calls/full` gives the stored call (the fields
    `sessions.ocsf` reads), converted as the writer stores it: the same events either way."""
    values = call_values(record)
    refused_identity = record.error == "identity"  # its answer's reason is exported
    body, encoding = body_json(record.response_body) if refused_identity else (None, None)
    row = {k: values[k] for k in (
        "call_id", "session_id", "client_addr", "subject", "groups", "protocol", "function",
        "method", "url", "status", "decision", "enforced", "rules", "mode", "error",
        "forwarded")}
    row.update(started_at=iso_us(values["started_at"]), ended_at=iso_us(values["ended_at"]),
               node=node, findings=finding_dicts(record.findings), response_body=body,
               response_body_encoding=encoding)
    return row


class OcsfStream:
    """Appends the OCSF events of the calls submitted to `path`, on its own thread."""

    def __init__(self, path: str | Path, max_queue: int = MAX_QUEUE) -> None:
        self.path = Path(path).expanduser()
        self.stats = {"calls": 0, "events": 0, "dropped": 0, "failed": 0}
        self.last_error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._lock = threading.Lock()  # the stats, counted from the writer's threads too
        self._fd: int | None = None
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the open file
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="toolgate-ocsf", daemon=True)
        self._thread.start()

    # -- for the recorder --------------------------------------------------------------------

    def submit(self, record: CallRecord, kept: Future | None = None,
               node: str | None = None) -> None:
        """Stream this call's events once `kept` (the writer's Future for the record) resolves
        without error; at once without one. Never blocks."""
        if kept is None:
            self._put(record, node)
            return

        def on_kept(future: Future) -> None:  # on the writer's thread: a queue put, no more
            if not future.cancelled() and future.exception() is None:
                self._put(record, node)

        kept.add_done_callback(on_kept)

    def health(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self.stats)
        return {"file": str(self.path), "queued": self._queue.qsize(), **stats,
                "error": self.last_error}

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Write what is queued (`timeout` at most), then close the file."""
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.warning("toolgate: the OCSF stream to %s did not drain in %.0f s",
                           self.path, timeout)
            return
        self._thread.join(timeout)

    def close_after(self, writer: Any) -> None:
        """`close()` once `writer` (anything with `join(timeout)`, or None) has stopped, on a
        thread of its own that the process waits for at exit: the records the writer still
        commits are streamed, and the caller (the event loop) does not wait."""
        def wait_then_close() -> None:
            if writer is not None:
                writer.join(CLOSE_WAIT)
            self.close()

        threading.Thread(target=wait_then_close, name="toolgate-ocsf-close").start()

    # -- the thread ------------------------------------------------------------------------

    def _put(self, record: CallRecord, node: str | None) -> None:
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait((record, node))
        except queue.Full:
            with self._lock:
                self.stats["dropped"] += 1
                first = self.stats["dropped"] == 1
            if first or self.stats["dropped"] % 1000 == 0:
                logger.warning("toolgate: the OCSF stream to %s is behind: %d call(s) dropped "
                               "so far", self.path, self.stats["dropped"])

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                calls = [item for item in batch if item is not _STOP]
                if calls:
                    self._write(calls)
                if len(calls) < len(batch):
                    return
        finally:
            self._close_file()

    def _write(self, calls: list[tuple[CallRecord, str | None]]) -> None:
        lines: list[str] = []
        failed = 0
        for record, node in calls:
            try:
                lines.extend(ocsf.dumps(event) + "\n"
                             for event in ocsf.call_events(call_row(record, node)))
            except Exception:  # noqa: BLE001 - one odd record must not stop the stream
                logger.exception("toolgate: cannot build the OCSF events of call %s",
                                 record.call_id)
                failed += 1
        data = "".join(lines).encode("ascii")  # ocsf.dumps writes ASCII only
        try:
            if data:
                self._append(data)
        except OSError as exc:
            with self._lock:
                self.stats["failed"] += len(calls)
            if self.last_error is None:
                logger.warning("toolgate: cannot append OCSF events to %s: %s (the calls go on; "
                               "their events are dropped and counted)", self.path, exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._close_file()  # the next batch opens it again
            return
        with self._lock:
            self.stats["calls"] += len(calls) - failed
            self.stats["events"] += len(lines)
            self.stats["failed"] += failed
        if self.last_error is not None:
            logger.info("toolgate: appending OCSF events to %s again", self.path)
            self.last_error = None

    def _append(self, data: bytes) -> None:
        fd = self._open()
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            try:  # no half line for the shipper: take back what part of the batch went in
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise

    def _open(self) -> int:
        """The file, opened again if it was rotated (moved or removed) since."""
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._file_id:
                    return self._fd
            except FileNotFoundError:
                pass
            self._close_file()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        self._fd, self._file_id = fd, (st.st_dev, st.st_ino)
        return fd

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = self._file_id = None
