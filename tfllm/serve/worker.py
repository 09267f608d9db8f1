"""The model thread: jobs queue up, requests that arrive together are decoded together.

All model work runs on one thread, so TensorFlow is never entered from the event loop
and concurrent requests never interleave inside one model call. A job reports back
through events that the web side awaits:

    ("text", piece)               a piece of the reply (whole characters only)
    ("end", finish_reason, usage) finish_reason "stop" or "length"; usage token counts
    ("error", message)            the request failed; nothing more follows
    ("cancelled",)                the job was cancelled (its client left)

No TensorFlow here: the run-directory engine and the SavedModel engine subclass `Worker`.
"""

import asyncio
import dataclasses
import queue
import threading
import time


@dataclasses.dataclass
class Sampling:
    """One request's generation parameters (already checked by the protocol layer)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple = ()


class Job:
    """One request on its way through the worker.

    Args:
        kind: "chat" or "completion".
        prompt: what the engine decodes from (token ids, or text / messages for a
            SavedModel).
        sampling: a `Sampling`.
        prompt_tokens: the prompt's length in tokens (for `usage`).
        loop: the event loop that awaits `events`; None for a caller without one
            (events then go to a plain thread-safe queue).
    """

    def __init__(self, kind, prompt, sampling, prompt_tokens, loop=None):
        self.kind, self.prompt, self.sampling = kind, prompt, sampling
        self.prompt_tokens = prompt_tokens
        self.loop = loop
        self.events = asyncio.Queue() if loop is not None else queue.Queue()
        self._cancelled = threading.Event()

    def emit(self, *event):
        """Hand an event to the waiting side (thread-safe)."""
        if self.loop is None:
            self.events.put(event)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self):
        """Stop generating for this job (its client is gone): the worker drops it at its
        next step, or before it starts."""
        self._cancelled.set()

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def usage(self, completion_tokens):
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}


class Worker:
    """A thread that takes the queued jobs, splits them into batches and decodes each.

    Subclasses implement `fits(batch, job)` (may `job` join `batch`?) and
    `run_batch(jobs)` (decode them, emitting every job's events).

    Args:
        max_batch: the most jobs decoded together.
        batch_window: seconds to wait after a job arrives at an idle worker for others
            sent at the same moment; jobs that arrive while a batch runs are batched
            when it ends.
    """

    def __init__(self, max_batch=16, batch_window=0.01):
        self.max_batch, self.batch_window = max_batch, batch_window
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self.stats = {"active": 0, "queued": 0, "completed": 0, "cancelled": 0, "failed": 0,
                      "batches": 0, "largest_batch": 0, "tokens_generated": 0}
        self._thread = threading.Thread(target=self._run, name="tfllm-serve-worker",
                                        daemon=True)

    def start(self):
        self._thread.start()

    def submit(self, job):
        with self._lock:
            self.stats["queued"] += 1
        self._queue.put(job)

    def count(self, key, n=1):
        with self._lock:
            self.stats[key] += n

    def snapshot(self):
        with self._lock:
            return dict(self.stats)

    def fits(self, batch, job):
        raise NotImplementedError

    def run_batch(self, jobs):
        raise NotImplementedError

    def batches(self, jobs):
        """Split `jobs` (in arrival order) into batches: each job joins the first batch
        it fits, so no job waits behind one that arrived later."""
        batches = []
        for job in jobs:
            for batch in batches:
                if len(batch) < self.max_batch and self.fits(batch, job):
                    batch.append(job)
                    break
            else:
                batches.append([job])
        return batches

    def _take(self):
        jobs = [self._queue.get()]
        deadline = time.monotonic() + self.batch_window
        while True:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return jobs

    def _run(self):
        while True:
            jobs = self._take()
            with self._lock:
                self.stats["queued"] -= len(jobs)
            for batch in self.batches(jobs):
                live = []
                for job in batch:
                    if job.cancelled:
                        self.count("cancelled")
                        job.emit("cancelled")
                    else:
                        live.append(job)
                if not live:
                    continue
                with self._lock:
                    self.stats["active"] += len(live)
                    self.stats["batches"] += 1
                    self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
                try:
                    self.run_batch(live)
                except Exception as e:  # a failed batch must not take the server down
                    for job in live:
                        job.emit("error", f"generation failed: {type(e).__name__}: {e}")
                    self.count("failed", len(live))
                finally:
                    with self._lock:
                        self.stats["active"] -= len(live)

    def finish(self, job, reason, completion_tokens):
        """Record and announce the end of a job: cancelled, or finished with `reason`."""
        self.count("tokens_generated", completion_tokens)
        if job.cancelled:
            self.count("cancelled")
            job.emit("cancelled")
            return
        self.count("completed")
        job.emit("end", reason, job.usage(completion_tokens))
