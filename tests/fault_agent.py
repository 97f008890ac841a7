"""A real agent process for tests/test_faults.py: the package's Agent, in a
process of its own, so that the suite can SIGKILL it while it holds commands.

    python tests/fault_agent.py '{"conninfo": ..., "deployment": ..., "agent_id": ...,
                                  "lease": 2, "limit": 3, "work": 0.3}'

It prints one JSON line per event on stdout (flushed): ready, claimed, started,
reported, refused, error. It claims with wait_for_commands (its own listener,
polling as the fallback), starts each command, "works" for ``work`` seconds,
then reports it completed with its pid in the result. Connection errors (a
server restart) are printed and the loop goes on: the pool and the listener
recover by themselves.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import psycopg

from stacker_queue import Agent, Conflict


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    pid = os.getpid()
    agent = Agent.connect(
        cfg["conninfo"],
        cfg["deployment"],
        cfg["agent_id"],
        poll_interval=cfg.get("poll", 0.5),
        lease_seconds=cfg["lease"],
    )
    emit(event="ready", pid=pid)
    while True:
        try:
            commands = agent.wait_for_commands(timeout=cfg.get("wait", 1.0), limit=cfg["limit"])
        except psycopg.Error as exc:
            emit(event="error", op="claim", error=str(exc).strip().splitlines()[0])
            time.sleep(0.2)
            continue
        for cmd in commands:
            emit(
                event="claimed",
                id=cmd.command_id,
                attempts=cmd.attempts,
                lease=cmd.lease_expires_at.isoformat() if cmd.lease_expires_at else None,
            )
        for cmd in commands:
            try:
                agent.start(cmd.command_id)
                emit(event="started", id=cmd.command_id)
                time.sleep(cfg["work"])
                # A report lost to a dropped connection is sent again: the same
                # report twice is accepted once and then returns the row unchanged.
                for _ in range(100):
                    try:
                        agent.report_result(
                            cmd.command_id, "completed", {"pid": pid, "attempt": cmd.attempts}
                        )
                        break
                    except psycopg.OperationalError as exc:
                        emit(
                            event="error",
                            op="report",
                            id=cmd.command_id,
                            error=str(exc).strip().splitlines()[0],
                        )
                        time.sleep(0.2)
                emit(event="reported", id=cmd.command_id, attempts=cmd.attempts)
            except Conflict as exc:
                emit(event="refused", id=cmd.command_id, error=exc.message)
            except psycopg.Error as exc:
                emit(
                    event="error",
                    op="start",
                    id=cmd.command_id,
                    error=str(exc).strip().splitlines()[0],
                )


if __name__ == "__main__":
    main()
