"""Each configuration in a fresh process forked from a clean "zygote" that has only imported torch
and never runs a model.

Why: peak memory is then that configuration's own, not a high-water mark left by an earlier,
bigger one; no allocator cache, compiled graph or CUDA state carries over; and a crash names
its configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from salt.benchmarking.limits import BenchError
from salt.benchmarking.measure import measure_config


def _measure_message(job: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"status": "ok", "result": measure_config(job)}
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the run unless out of memory
        oom = out_of_memory(err)
        if oom is not None:
            return {"status": "oom", "message": str(oom).splitlines()[0] if str(oom) else "CUDA out of memory"}
        return {"status": "error", "message": traceback.format_exc()}


def out_of_memory(err: BaseException | None) -> BaseException | None:
    """The CUDA out-of-memory error behind `err`, if any. Raised inside a CUDA graph capture, it
    surfaces as the capture's own error on leaving the capture, with the OOM as its context."""
    while err is not None:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _zygote_main() -> None:
    """The clean process each configuration is forked from: it has imported torch and salt (so a
    fork starts in milliseconds) but never runs a model, starts a thread pool or touches CUDA.

    Reads one job per line (JSON) on stdin, forks a child per job, and answers one JSON line per job
    on its original stdout; everything else anyone prints goes to stderr.
    """
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        job = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the measuring process
            os.close(read_fd)
            code = 0
            try:
                with os.fdopen(write_fd, "w") as out:
                    json.dump(_measure_message(job), out)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as result:
            text = result.read()
        _, status = os.waitpid(pid, 0)
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = {"status": "died", "exitcode": os.waitstatus_to_exitcode(status)}
        answers.write(json.dumps(message) + "\n")
        answers.flush()


class _Zygote:
    """The parent's handle on the zygote process (started on first use, ended with the parent)."""

    process: subprocess.Popen | None = None

    @classmethod
    def ask(cls, job: dict[str, Any]) -> dict[str, Any]:
        if cls.process is None or cls.process.poll() is not None:
            package_root = str(Path(__file__).resolve().parent.parent)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                            os.environ.get("PYTHONPATH")])))
            cls.process = subprocess.Popen([sys.executable, "-c", "from salt.benchmarking.isolation import _zygote_main; _zygote_main()"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert cls.process.stdin is not None and cls.process.stdout is not None
        try:
            cls.process.stdin.write(json.dumps(job) + "\n")
            cls.process.stdin.flush()
            answer = cls.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not answer:
            code = cls.process.wait()
            cls.process = None
            raise BenchError(f"{describe(job)}: the benchmark's zygote process ended (exit code {code})")
        return json.loads(answer)


def measure_isolated(job: dict[str, Any]) -> tuple[str, Any]:
    """`measure_config` in a fresh process: ("ok", result), ("oom", message) or ("error", traceback).

    The process is a fork of a clean zygote that has only imported torch: nothing a previous
    configuration allocated, compiled or cached is in it. Raises BenchError when the process dies
    without an answer (killed, e.g. out of memory)."""
    if not hasattr(os, "fork"):
        return _unisolated(job)
    message = _Zygote.ask(job)
    if message["status"] == "died":
        code = message["exitcode"]
        why = " (killed: out of memory?)" if code == -9 else ""
        raise BenchError(f"{describe(job)}: the measuring process ended with exit code {code}{why} and no result")
    return message["status"], message.get("result", message.get("message"))


def _unisolated(job: dict[str, Any]) -> tuple[str, Any]:
    message = _measure_message(job)  # no fork (not POSIX): measured in this process
    return message["status"], message.get("result", message.get("message"))


def describe(point: dict[str, Any]) -> str:
    return (f"N={point['particles']} batch={point['batch']} threads={point['threads']} "
            f"{point['backend']} {point['precision']}")
