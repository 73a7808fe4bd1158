"""The recorder's waits for the writer's word (`addons.recording.waiters`): right answers, one
wake-up of the event loop for a burst of records, timeouts and cancellation that also cancel
the record's future."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest
from mitmproxy.test import taddons, tflow

from toolgate.addons.recording import addon as recording
from toolgate.addons.recording import waiters as waiters_module
from toolgate.addons.recording.addon import Recorder
from toolgate.addons.recording.waiters import Waiters
from toolgate.sessions.writer import RecordingError, Writer

from test_sessions_recorder import flow_with_identity, recorder_writer_join


class Refused(Exception):
    pass


def waiters(timeout: float = 30.0) -> Waiters:
    return Waiters(asyncio.get_running_loop(), timeout, (Refused,))


def test_a_wait_says_whether_the_record_was_kept():
    async def main():
        w = waiters()
        kept, refused, broken = Future(), Future(), Future()
        waits = [asyncio.ensure_future(w.wait(f)) for f in (kept, refused, broken)]
        await asyncio.sleep(0)
        assert not any(wait.done() for wait in waits)
        kept.set_result(None)
        refused.set_exception(Refused("disk full"))
        broken.set_exception(KeyError("a bug"))  # not a refusal: raised, the hook fails closed
        results = await asyncio.gather(*waits, return_exceptions=True)
        assert results[:2] == [True, False]
        assert isinstance(results[2], KeyError)
        assert len(w) == 0

    asyncio.run(main())


def test_a_future_done_before_the_wait_answers_at_once():
    async def main():
        w = waiters()
        done = Future()
        done.set_result(None)
        assert await asyncio.wait_for(w.wait(done), 1) is True

    asyncio.run(main())


def test_a_burst_of_records_settled_by_another_thread_wakes_the_loop_once(monkeypatch):
    async def main():
        loop = asyncio.get_running_loop()
        wakeups = []
        original = loop.call_soon_threadsafe

        def counted(callback, *args, **kwargs):
            wakeups.append(callback)
            return original(callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        w = waiters()
        futures = [Future() for _ in range(200)]
        waits = [asyncio.ensure_future(w.wait(f)) for f in futures]
        await asyncio.sleep(0)

        def settle() -> None:  # as the writer's resolving thread does after a group commit
            for future in futures:
                future.set_result(None)

        thread = threading.Thread(target=settle)
        thread.start()
        thread.join()
        assert await asyncio.gather(*waits) == [True] * 200
        assert len(wakeups) == 1

    asyncio.run(main())


def test_a_wait_past_its_timeout_is_false_and_cancels_the_record(monkeypatch):
    monkeypatch.setattr(waiters_module, "SWEEP_INTERVAL", 0.05)

    async def main():
        w = waiters(timeout=0.1)
        never = Future()
        assert await asyncio.wait_for(w.wait(never), 5) is False
        assert never.cancelled()  # the writer will not write it now
        late = Future()
        late.set_running_or_notify_cancel()  # the writer began to write it: it cannot be cancelled
        assert await asyncio.wait_for(w.wait(late), 5) is False
        late.set_result(None)  # settled after its wait gave up: ignored
        await asyncio.sleep(0.01)
        assert len(w) == 0

    asyncio.run(main())


def test_a_cancelled_wait_cancels_its_record():
    async def main():
        w = waiters()
        future = Future()
        wait = asyncio.ensure_future(w.wait(future))
        await asyncio.sleep(0)
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait
        assert future.cancelled()
        assert len(w) == 0

    asyncio.run(main())


def test_a_writer_that_never_answers_gets_the_call_refused_not_forwarded(tmp_path, monkeypatch):
    """Under audit, a `pending` record the writer never confirms (a hung disk) refuses the call
    after COMMIT_TIMEOUT: 503 unrecorded, and nothing is let through."""
    monkeypatch.setattr(recording, "COMMIT_TIMEOUT", 0.2)
    monkeypatch.setattr(waiters_module, "SWEEP_INTERVAL", 0.05)
    monkeypatch.setattr(Writer, "submit_request", lambda self, record: Future())

    async def main():
        recorder = Recorder()
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, toolgate_db=str(tmp_path / "s.duckdb"), toolgate_durability="audit")
            try:
                await recorder.request(tflow.tflow(resp=True))  # opens the store
                f = flow_with_identity()
                await asyncio.wait_for(recorder.request(f), 10)
                return f
            finally:
                recorder.done()
                recorder_writer_join(recorder)

    f = asyncio.run(main())
    assert f.response is not None and f.response.status_code == 503
    assert f.metadata["toolgate.refused"] == "unrecorded"


def test_a_record_refused_by_the_writer_is_false():
    async def main():
        w = Waiters(asyncio.get_running_loop(), 30.0, (RecordingError,))
        future = Future()
        future.set_exception(RecordingError("the journal is full"))
        assert await w.wait(future) is False

    asyncio.run(main())
