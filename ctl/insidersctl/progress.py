"""`insidersctl update --wait`: what is being checked now, and how it ended.

Two views of the same progress events. On a terminal, `LiveView` keeps one line per repository
and redraws them in place, with the stage, the elapsed time and, while a build runs, its log's
path (to `tail -f`); a summary ends it. Anywhere else (a pipe, a file, TERM=dumb), `PlainView`
prints one line per step and one line per result, for logs and scripts. Either way a failure is
said once, with its log path once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from insidersctl import protocol as p
from insidersctl.output import clock, plural, without_log
from insidersctl.terminal import Terminal, fit
from insidersctl.terminal import rows as rows_of

# Stages of a repository that waits: for a check slot, for a build slot (its clock does not run).
_WAITING = frozenset({"queued", "waiting"})
# Stages after which a repository's check is over (the daemon's Progress.stage values).
FINAL = frozenset({"done", "failed", "refused", "up-to-date"})
_OUTCOME_STAGE = {
    "published": "done",
    "failed": "failed",
    "refused": "refused",
    "up-to-date": "up-to-date",
}
_COLOURS = {
    "queued": ("yellow",),
    "waiting": ("yellow",),
    "listing": ("cyan",),
    "fetching": ("cyan",),
    "building": ("cyan", "bold"),
    "publishing": ("cyan",),
    "done": ("green",),
    "failed": ("red", "bold"),
    "refused": ("yellow", "bold"),
    "up-to-date": ("dim",),
}


def result_line(result: p.RepoOutcome) -> str:
    """One repository's outcome, as the plain view ends with it."""
    return _result(result) + still_failing(result)


def still_failing(result: p.RepoOutcome) -> str:
    """What `repos list` would add: an older failure this check did not retry stands."""
    if result.state == "failing" and result.outcome not in {"failed", "queued"}:
        return " (still failing: see insidersctl repos list)"
    return ""


def _result(result: p.RepoOutcome) -> str:
    if result.outcome == "published":
        return f"{result.repo}: published {', '.join(result.versions)}"
    if result.outcome in {"failed", "refused"}:
        error = without_log(result.error or "", result.log)
        word = result.outcome.upper()
        where = f" (log: {result.log})" if result.log else ""
        return f"{result.repo}: {word}: {error}{where}{_also_published(result)}"
    message = f": {result.message}" if result.message else ""
    return f"{result.repo}: {result.outcome}{message}"


def _also_published(result: p.RepoOutcome) -> str:
    return f"; published {', '.join(result.versions)}" if result.versions else ""


def summary(report: p.UpdateReport, seconds: float, term: Terminal) -> str:
    """Versions are counted (a repository can publish two and fail one), then the repositories
    with nothing to do and the checks that failed before building anything."""
    results = report.results
    published = sum(len(r.versions) for r in results)
    failed = sum(len(r.failures) for r in results)
    refused = sum(len(r.refused) for r in results)
    up_to_date = sum(1 for r in results if r.outcome == "up-to-date")
    checks_failed = sum(1 for r in results if r.outcome == "failed" and not r.failures)
    parts = []
    if published:
        parts.append(term.paint(f"{plural(published, 'version')} published", "green"))
    if failed:
        parts.append(term.paint(f"{plural(failed, 'version')} failed", "red", "bold"))
    if refused:
        parts.append(term.paint(f"{plural(refused, 'version')} refused", "yellow", "bold"))
    if up_to_date:
        parts.append(f"{plural(up_to_date, 'repository', 'repositories')} up to date")
    if checks_failed:
        parts.append(term.paint(f"{plural(checks_failed, 'check')} failed", "red", "bold"))
    checked = plural(len(results), "repository", "repositories")
    return f"checked {checked} in {clock(seconds)}: {', '.join(parts) or 'nothing to do'}"


class PlainView:
    """A line per step (the build's log path with it), then a line per result."""

    def __init__(self, term: Terminal) -> None:
        self.term = term

    def event(self, event: p.Progress) -> None:
        if event.stage in FINAL:
            return  # said once, by the result lines
        version = f" {event.version}" if event.version else ""
        message = f": {event.message}" if event.message else ""
        log = f" (log: {event.log})" if event.log and event.stage == "building" else ""
        print(f"{event.repo}: {event.stage}{version}{message}{log}", flush=True)

    def tick(self) -> None:
        pass

    def finish(self, report: p.UpdateReport) -> None:
        for result in report.results:
            print(result_line(result))

    def close(self) -> None:
        pass


class _Row:
    __slots__ = ("ended", "log", "message", "repo", "stage", "started", "version")

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.stage = "queued"
        self.version: str | None = None
        self.message = ""
        self.log: str | None = None
        # None while it waits (for a check slot, for a build slot): its clock starts when it works.
        self.started: float | None = None
        self.ended: float | None = None


class LiveView:
    """One line per repository, redrawn in place on each event and each tick of the clock."""

    def __init__(self, term: Terminal, now: Callable[[], float] = time.monotonic) -> None:
        self.term = term
        self.now = now
        self.started = now()
        self.rows: dict[str, _Row] = {}
        self._drawn = 0  # screen rows the last drawing took
        self._version_width = 0  # the longest version shown: the clocks stay in one column

    def event(self, event: p.Progress) -> None:
        row = self._row(event.repo)
        if event.stage in _WAITING:
            row.started = None
        elif row.started is None or row.stage in _WAITING:
            row.started = self.now()
        row.stage = event.stage
        if event.version:
            row.version = event.version
        if event.log:
            row.log = event.log
        # "done" says "published VERSIONS": the stage word and the version column say it already.
        row.message = "" if event.stage == "done" else without_log(event.message, row.log)
        if event.stage in FINAL:
            row.ended = self.now()
        self.draw()

    def tick(self) -> None:
        self.draw()

    def finish(self, report: p.UpdateReport) -> None:
        for result in report.results:
            row = self._row(result.repo)
            row.stage = _OUTCOME_STAGE.get(result.outcome, result.outcome)
            if result.outcome == "published":
                row.message = ""
                row.version = ", ".join(result.versions) or row.version
            elif result.outcome in {"failed", "refused"}:
                row.log = result.log or row.log
                row.message = without_log(result.error or row.message, row.log)
                row.message += _also_published(result)
                bad = [f.version for f in (*result.failures, *result.refused)]
                row.version = ", ".join(bad) or None  # not the last version it built
            elif result.message:
                row.message = result.message
            row.message = (row.message + still_failing(result)).strip()
            if row.ended is None:
                row.ended = self.now()
        self.draw(final=True)  # every repository, once: it is not redrawn after
        self.close()
        print(summary(report, self.now() - self.started, self.term), flush=True)

    def close(self) -> None:
        """Give the cursor back (also when interrupted)."""
        if self._drawn:
            self.term.stream.write("\x1b[?25h")
            self.term.stream.flush()

    def _row(self, repo: str) -> _Row:
        if repo not in self.rows:
            self.rows[repo] = _Row(repo)
        return self.rows[repo]

    def lines(self, width: int, height: int | None = None) -> list[str]:
        """The view, in at most `height` screen rows (None: every repository).

        A drawing taller than the screen could not be redrawn in place: with many repositories,
        the finished ones that went well are counted on one line instead of listed.
        """
        rows = list(self.rows.values())
        hidden: list[_Row] = []
        if height is not None and self._rows_needed(rows) > height - 1:
            hidden = [r for r in rows if r.stage in {"done", "up-to-date"}]
            rows = [r for r in rows if r not in hidden]
        name_width = max((len(r) for r in self.rows), default=0)
        self._version_width = max((len(r.version or "") for r in self.rows.values()), default=0)
        out = []
        if hidden:
            done = sum(1 for r in hidden if r.stage == "done")
            out.append(self.term.paint(f"{len(hidden)} finished ({done} published), …", "dim"))
        for row in rows:
            out += self._row_lines(row, name_width, width)
        if height is not None and sum(rows_of(line, width) for line in out) > height - 1:
            kept: list[str] = []
            for line in out:
                if sum(rows_of(x, width) for x in kept) + rows_of(line, width) > height - 2:
                    break
                kept.append(line)
            out = [*kept, self.term.paint(f"… and {len(rows)} in all", "dim")]
        return out

    def _rows_needed(self, rows: list[_Row]) -> int:
        return sum(
            1 + (1 if r.log and r.stage in {"building", "failed", "refused"} else 0) for r in rows
        )

    def _row_lines(self, row: _Row, name_width: int, width: int) -> list[str]:
        paint = self.term.paint
        word = {"done": "published", "up-to-date": "up to date"}.get(row.stage, row.stage)
        stage = paint(f"{word:<10}", *_COLOURS.get(row.stage, ()))
        version = f"{row.version or '':<{max(8, self._version_width)}}"
        elapsed = "" if row.started is None else clock((row.ended or self.now()) - row.started)
        message = f"  {paint(row.message, 'dim')}" if row.message else ""
        line = f"{row.repo:<{name_width}}  {stage} {version} {elapsed:>5}{message}"
        out = [fit(line, width)]
        if row.log and row.stage in {"building", "failed", "refused"}:
            # Whole, even if it wraps: it is there to be copied.
            out.append(f"{'':<{name_width}}  log: {row.log}")
        return out

    def draw(self, final: bool = False) -> None:
        width = self.term.width()
        lines = self.lines(width, None if final else self.term.height())
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # back to the first line of the last drawing
        else:
            parts.append("\x1b[?25l")  # no cursor blinking over the lines
        parts += [f"\x1b[2K{line}\n" for line in lines]
        parts.append("\x1b[J")  # whatever the last drawing had below
        self._drawn = sum(rows_of(line, width) for line in lines)
        self.term.stream.write("".join(parts))
        self.term.stream.flush()
