"""The serving scheduler: the one thread that runs the model. It collects queued requests into batches
(codejax/serve.py's docstring says how), runs one `generate` per group of compatible requests, and
streams each row's text to its request as the decode chunks finish."""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time

from codejax.generate import SamplingParams, generate
from codejax.generate.sampler import _cut_at_stop
from codejax.server.openai_api import FINISH_REASONS, ApiError, Job

log = logging.getLogger("codejax.serve")

# ----------------------------------------------------------------------------- scheduling

def take_batch(backlog: list[Job], max_batch: int) -> tuple[list[Job], list[Job]]:
    """(the next batch, the rest): the oldest job's group, in arrival order, while the rows fit max_batch.
    The oldest job always goes, even when it alone has more rows."""
    key, batch, rest, rows = backlog[0].key, [], [], 0
    for job in backlog:
        if job.key == key and (not batch or rows + job.rows <= max_batch):
            batch.append(job)
            rows += job.rows
        else:
            rest.append(job)
    return batch, rest


def window_close(opened: float, last_arrival: float, wait_s: float) -> float:
    """When a batch stops waiting for more requests: `wait_s` after the latest one arrived, at most
    4 * wait_s after the window opened. It opens when the oldest request arrived or, if later, when the
    last batch finished. Under load the clients a batch just answered send their next requests one by
    one over a few milliseconds; starting at once with the requests queued meanwhile would split the
    clients into two half-size batches taking turns."""
    return min(opened + 4 * wait_s, max(opened, last_arrival) + wait_s)


def padded_rows(n: int) -> int:
    """Rows a batch of n is padded to: the next power of two, so at most log2(max_batch) + 1 shapes compile."""
    return 1 << max(0, n - 1).bit_length()


def batch_seed(jobs: list[Job], rng: random.Random) -> int:
    """A lone request's seed makes it reproducible; a shared batch draws its own."""
    if len(jobs) == 1 and jobs[0].seed is not None:
        return jobs[0].seed % 2**31
    return rng.randrange(2**31)


def streamable(text: str, stops: tuple[str, ...]) -> str:
    """What of a growing completion can be sent now: the text before a stop string once one appears;
    until then without a trailing partial character (U+FFFD: a multi-byte character split across
    tokens) and without the last len(longest stop) - 1 characters, which may become a stop string."""
    cut, hit = _cut_at_stop(text, stops)
    if hit:
        return cut
    text = text.rstrip("\ufffd")
    hold = max(map(len, stops), default=1) - 1
    return text[:max(0, len(text) - hold)]


class RowStream:
    """One streamed choice: the text sent so far, advanced only by extensions of it."""

    def __init__(self, job: Job, index: int):
        self.job, self.index, self.sent, self.seen = job, index, "", 0

    def advance(self, text: str) -> None:
        # A decode that rewrote earlier text (rare tokenizer clean-ups) cannot be taken back: wait for more.
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.job.events.put(("delta", self.index, piece))


class Stats:
    """The scheduler's counters, read by GET /health from the HTTP threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.values = {"requests": 0, "batches": 0, "rows": 0, "padded_rows": 0, "max_rows_per_batch": 0,
                       "failed_batches": 0, "rows_per_batch": {}}

    def batch(self, jobs: int, rows: int, padded: int) -> None:
        with self._lock:
            v = self.values
            v["requests"] += jobs
            v["batches"] += 1
            v["rows"] += rows
            v["padded_rows"] += padded
            v["max_rows_per_batch"] = max(v["max_rows_per_batch"], rows)
            v["rows_per_batch"][str(rows)] = v["rows_per_batch"].get(str(rows), 0) + 1

    def failed(self) -> None:
        with self._lock:
            self.values["failed_batches"] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(self.values))


class Scheduler:
    """The one thread that runs the model: collects jobs, batches them, answers on each job's events."""

    def __init__(self, served, *, max_batch: int, batch_wait_s: float, chunk_size: int):
        self.served, self.max_batch, self.batch_wait_s, self.chunk_size = served, max_batch, batch_wait_s, chunk_size
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.stats = Stats()
        self.stopping = threading.Event()
        self.rng = random.Random()
        self.free_since = 0.0  # when the last batch finished
        self.thread = threading.Thread(target=self._loop, name="codejax-serve-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        if self.stopping.is_set():
            raise ApiError(503, "the server is shutting down", kind="server_error")
        self.inbox.put(job)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        self.thread.join(timeout_s)
        while True:  # whatever never ran is answered, not left waiting
            try:
                self.inbox.get_nowait().events.put(("error", 503, "the server is shutting down"))
            except queue.Empty:
                return

    def _collect(self, backlog: list[Job]) -> list[Job]:
        """Take in what arrives until the batching window closes (window_close) or the batch is full."""
        while True:
            try:
                backlog.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        while backlog:
            first = backlog[0]
            group = [j for j in backlog if j.key == first.key]
            close = window_close(max(first.arrived, self.free_since), group[-1].arrived, self.batch_wait_s)
            remaining = close - time.monotonic()
            if remaining <= 0 or sum(j.rows for j in group) >= self.max_batch:
                break
            try:
                backlog.append(self.inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return backlog

    def _loop(self) -> None:
        backlog: list[Job] = []
        while not self.stopping.is_set():
            if not backlog:
                try:
                    backlog.append(self.inbox.get(timeout=0.2))
                except queue.Empty:
                    continue
            backlog = [j for j in self._collect(backlog) if not j.cancelled.is_set()]
            if not backlog:
                continue
            batch, backlog = take_batch(backlog, self.max_batch)
            self.run_batch(batch)
            self.free_since = time.monotonic()
        for job in backlog:
            job.events.put(("error", 503, "the server is shutting down"))

    def run_batch(self, jobs: list[Job]) -> None:
        """One generate() for `jobs` (one group); every job gets its deltas and then "done" or "error"."""
        key = jobs[0].key
        model, variables = self.served.models[key.model]
        tokenizer = self.served.tokenizer
        rows = [(job, i * job.n + j, ids) for job in jobs for i, ids in enumerate(job.prompts) for j in range(job.n)]
        size = padded_rows(len(rows))
        prompts = [ids for _, _, ids in rows] + [rows[-1][2]] * (size - len(rows))  # padding rows are discarded
        params = SamplingParams(max_new_tokens=key.max_tokens, temperature=key.temperature, top_k=key.top_k,
                                top_p=key.top_p, stop=key.stop, eos_ids=key.eos, chunk_size=self.chunk_size,
                                seed=batch_seed(jobs, self.rng))
        streams = {r: RowStream(job, index) for r, (job, index, _) in enumerate(rows) if job.stream}
        eos = set(key.eos)

        def on_chunk(tokens, lengths):
            for r, s in streams.items():
                if s.job.cancelled.is_set() or lengths[r] == s.seen:
                    continue
                s.seen = int(lengths[r])
                text = tokenizer.decode([t for t in tokens[r, :s.seen].tolist() if t not in eos],
                                        skip_special_tokens=True)
                s.advance(streamable(text, key.stop))

        start = time.monotonic()
        try:
            out = generate(model, variables, tokenizer, prompts, params, on_chunk=on_chunk if streams else None)
        except Exception as e:  # noqa: BLE001 - the batch's requests get the error; the server goes on
            log.exception("generation failed for a batch of %d rows (%s)", len(rows), key.model)
            self.stats.failed()
            for job in jobs:
                job.events.put(("error", 500, f"generation failed: {type(e).__name__}: {e}"))
            return
        self.stats.batch(len(jobs), len(rows), size)
        log.info("batch: %d requests, %d rows (padded to %d), %s, max_tokens %d: %.2fs", len(jobs), len(rows), size,
                 key.model, key.max_tokens, time.monotonic() - start)
        choices: dict[Job, list[dict]] = {job: [] for job in jobs}
        for r, (job, index, _) in enumerate(rows):
            if r in streams:
                streams[r].advance(out.texts[r])
            choices[job].append({"index": index, "text": out.texts[r], "tokens": len(out.tokens[r]),
                                 "finish_reason": FINISH_REASONS[out.finish_reasons[r]]})
        for job in jobs:
            job.events.put(("done", choices[job], sum(map(len, job.prompts))))
