"""``herolog serve`` with a store writer that neither parses nor stores.

    python -m bench.pipeline_serve [serve options]

Everything else is the real server: uvicorn, the intake's checks, the hand-off to the
writer thread and the wait for its answer. ``bench.ingest`` measures it next to herolog
and the bare app, to show what parsing and storing cost the intake: with both free, what
is left is the round trip to the writer. (With many connections the real writer can be as
fast: answering at once keeps the groups small.)
"""

from __future__ import annotations

import herolog.server
from herolog.__main__ import main
from herolog.server.writer import Job, Result, Writer
from herolog.store import SQLiteStore


def answer_at_once(store: SQLiteStore, jobs: list[Job]) -> tuple[list[Result], bool]:
    """Every job answered as the real writer answers it, and nothing parsed or stored."""
    results: list[Result] = [(job[0], "ok", (0, 0)) for job in jobs if job[1] != "stop"]
    return results, len(results) < len(jobs)


class PipelineWriter(Writer):
    handle = staticmethod(answer_at_once)


if __name__ == "__main__":
    herolog.server.Writer = PipelineWriter  # type: ignore[attr-defined]  # what Server starts
    main()
