"""The terminal belongs to mint_rl's own output; third-party output goes to a log file.

vLLM, transformers and torch print warnings, progress bars and tracebacks from this process and
from the engine processes vLLM spawns (which inherit our stdout and stderr). Filtering loggers
one by one misses C-level prints and child processes, so `third_party_output_to(path)` moves file
descriptors 1 and 2 onto a log file and keeps a private handle on the terminal for `console`:
our progress lines, the live view and real errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text

# Everything mint_rl shows the user goes through this console. It writes to the terminal even
# while `third_party_output_to` sends the process's stdout and stderr to a log file.
console = Console(highlight=False)


@contextlib.contextmanager
def third_party_output_to(log_file: Path) -> Iterator[Path]:
    """Sends everything written to fds 1 and 2 (and by child processes) to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    # Rich reads `console.file` as "the file set, else sys.stdout now": restore what was *set*
    # (usually None), not the sys.stdout of this moment, or the console would stay pinned to it.
    previous = getattr(console, "_file", None)
    console.file = terminal
    # Progress bars make no sense in a file; the engines' processes inherit these too.
    quiet_env = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    saved_env = {k: os.environ.get(k) for k in quiet_env}
    os.environ.update(quiet_env)
    with open(log_file, "a", buffering=1) as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: "
                  f"{' '.join(sys.argv)}\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield log_file
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            # Rich stores None as "sys.stdout at each write"; its setter is typed IO[str] only.
            console.file = previous  # pyright: ignore[reportAttributeAccessIssue]
            terminal.close()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a text file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def process_start_time() -> float:
    """When this process started (epoch seconds): start-up times count the interpreter too."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil, no /proc: count from the first call instead
        return time.time()


class StartupTimeline:
    """Start-up phases, each printed with the seconds since the command started.

    `mark` prints one line per finished phase; `waiting` shows a spinner with a running clock
    while a slow phase (engine start-up) is under way. `save` writes the phases as JSON, which
    bench/bench_startup.py reads.
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = process_start_time() if start is None else start
        self.phases: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.time() - self.start

    def mark(self, phase: str, detail: str = "") -> None:
        if phase in self.phases:  # a phase happens once (a resumed pipeline may pass twice)
            return
        self.phases[phase] = round(self.elapsed(), 2)
        console.print(f"[dim]{self.phases[phase]:6.1f} s[/]  {phase}"
                      + (f" [dim]({detail})[/]" if detail else ""))

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A spinner with the elapsed time until the block ends (a static line off a tty)."""
        timeline = self

        class _Clock:
            def __rich__(self) -> Text:
                return Text(f"{what} ({timeline.elapsed():.0f} s)")

        if not console.is_terminal:
            console.print(f"[dim]{self.elapsed():6.1f} s[/]  {what}")
            yield
            return
        with console.status(_Clock()):
            yield

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.phases, indent=2) + "\n")


_PROCESS_TIMELINE: StartupTimeline | None = None


def startup_timeline() -> StartupTimeline:
    """This process's start-up timeline: phases are marked once, whoever reaches them first."""
    global _PROCESS_TIMELINE
    if _PROCESS_TIMELINE is None:
        _PROCESS_TIMELINE = StartupTimeline()
    return _PROCESS_TIMELINE
