"""``herolog serve`` with a writer process that neither parses nor stores.

    python -m bench.pipeline_serve [serve options]

Everything else is the real server: uvicorn, the intake's checks, the hand-off to the
writer process over its socket and the wait for its answer. What this serves is the most
any change to parsing or storing could give the intake, so ``bench.ingest`` measures it
next to herolog and the bare app.
"""

from __future__ import annotations

import herolog.server
from herolog.__main__ import main
from herolog.server.writer import Writer


class PipelineWriter(Writer):
    process_module = "bench.nostore_writer"


if __name__ == "__main__":
    herolog.server.Writer = PipelineWriter  # type: ignore[attr-defined]  # what Server starts
    main()
