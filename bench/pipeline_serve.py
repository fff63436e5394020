"""``herolog serve`` with a writer process that neither parses nor stores.

    python -m bench.pipeline_serve [serve options]

Everything else is the real server: uvicorn, the intake's checks, the hand-off to the
writer process over its socket and the wait for its answer. ``bench.ingest`` measures it
next to herolog and the bare app, to show what parsing and storing cost the intake: with
both free, what is left is the round trip to the writer. (With many connections the real
writer can be as fast: answering at once keeps the groups small.)
"""

from __future__ import annotations

import os
from pathlib import Path

import herolog.server
from herolog.__main__ import main
from herolog.server.writer import Writer


class PipelineWriter(Writer):
    process_module = "bench.nostore_writer"


if __name__ == "__main__":
    herolog.server.Writer = PipelineWriter  # type: ignore[attr-defined]  # what Server starts
    # The writer process is started with -P, without the current directory on sys.path.
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    main()
