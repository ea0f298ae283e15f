"""Run as a script by test_hardening: a stand-in worker that starts one job process through the
forkserver, as neurorad.server.worker.Worker does, and then waits to be killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time


def _job(pid_file: str) -> None:
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    from neurorad.server import worker

    ctx = mp.get_context("forkserver")
    proc = ctx.Process(target=worker._child, args=(_job, (sys.argv[1],), os.getpid()), daemon=True)
    proc.start()
    time.sleep(120)
