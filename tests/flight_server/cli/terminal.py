"""Run ``omero-flight`` as users do: a subprocess with no terminal, or on a pseudo-terminal.

:func:`run_cli` gives the command no terminal (stdin from /dev/null unless text is
given); :func:`run_on_terminal` gives it a pseudo-terminal (python's ``pty``) as its
controlling terminal, answers prompts as they appear and can press Ctrl-C. Both
return a :class:`Done` with the exit status, standard output and standard error
(on the terminal, what the terminal showed is ``out``; standard error stays apart).
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.processes import CLI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
CTRL_C = b"\x03"
CTRL_D = b"\x04"


@dataclass
class Done:
    status: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def assert_user_error(self, *words: str) -> None:
        """Exit status 2, exactly one line on stderr naming ``words``, no traceback."""
        assert self.status == 2, self
        assert len(self.error_lines) == 1, self
        assert self.error_lines[0].startswith("omero-flight"), self
        for word in words:
            assert word in self.err, (word, self)
        self.assert_no_traceback()

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.out and "Traceback" not in self.err, self


def cli_env(extra: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This environment without any ``OMERO_FLIGHT_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OMERO_FLIGHT_") and k not in drop}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            stdin: str | None = None, timeout: float = 120,
            command: Sequence[str] = CLI) -> Done:
    """``omero-flight args`` with no terminal at all."""
    done = subprocess.run(
        [*command, *args], input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, timeout=timeout, env=cli_env(env),
        start_new_session=True,  # no controlling terminal either
    )
    return Done(done.returncode, done.stdout, done.stderr)


def _take_terminal() -> None:
    """In the child: make its stdin (the pty) the controlling terminal, so Ctrl-C signals."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_on_terminal(args: Sequence[str], *, answers: Sequence[tuple[str, bytes]] = (),
                    env: Mapping[str, str] | None = None, timeout: float = 120,
                    command: Sequence[str] = CLI, interrupt_after: float | None = None) -> Done:
    """``omero-flight args`` on a pseudo-terminal; each (prompt, keys) answers a prompt.

    ``keys`` are typed once ``prompt`` has appeared on the terminal (after the
    previous answer): a line ending in ``\\n``, or ``CTRL_C`` / ``CTRL_D``.
    ``interrupt_after`` presses Ctrl-C that many seconds after the start.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen([*command, *args], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, env=cli_env(env), start_new_session=True,
                            preexec_fn=_take_terminal)
    os.close(slave)
    shown = err = both = b""  # both: the terminal and stderr, in arrival order
    seen = 0  # where the search for the next prompt starts
    pending = list(answers)
    started = time.monotonic()
    deadline = started + timeout
    errfd = proc.stderr.fileno() if proc.stderr else -1
    streams = {master, errfd}
    try:
        while streams:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args}: still running; the terminal shows {shown!r}")
            ready, _, _ = select.select(list(streams), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every holder of the terminal closed it
                    data = b""
                if not data:
                    streams.discard(fd)
                elif fd == errfd:
                    err += data
                    both += data
                else:
                    shown += data
                    both += data
            if not ready and proc.poll() is not None and master in streams:
                streams.discard(master)  # a grandchild may hold the pty; the child is done
            if interrupt_after is not None and time.monotonic() - started >= interrupt_after:
                os.write(master, CTRL_C)
                interrupt_after = None
            if pending:
                prompt, keys = pending[0]
                at = both.find(prompt.encode(), seen)  # input() prompts on stderr
                if at >= 0:
                    seen = at + len(prompt)
                    os.write(master, keys)
                    pending.pop(0)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
        if proc.stderr:
            proc.stderr.close()
    assert not pending, f"never asked {pending[0][0]!r}; the terminal showed {shown!r}"
    return Done(status, shown.decode(errors="replace"), err.decode(errors="replace"))
