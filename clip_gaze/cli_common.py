"""What the `clip-gaze` commands share: one error line, settings, the engine, common options."""

from __future__ import annotations

import functools
import json
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import click

from indexer.errors import ClipGazeError
from indexer.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from indexer.collections.local import Collections
    from indexer.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])

# What a terminal would act on or hide rather than show: C0 controls but newline and tab, DEL, C1
# controls, and the invisible and bidirectional format characters (Unicode category Cf, line and
# paragraph separators, lone surrogates).
_UNSHOWN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)


def shown(text: str) -> str:
    """`text` safe to print on a terminal: what a terminal would act on (ESC sequences, BEL, a carriage
    return) or hide (bidirectional overrides, zero-width characters) is written as `\\uXXXX`, which is
    also how JSON writes it, so JSON output stays JSON with the same meaning."""
    return _UNSHOWN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def each_image(images: Sequence[str], compute: Callable[[str], Any], show: Callable[[Any], str], as_json: bool,
               verb: str) -> None:
    """`compute` for each image path, its answer printed as JSON Lines or by `show`. One image that fails raises
    its own error; of several, each failure is one `Error:` line (and a JSON error line with --json), and the
    command fails at the end, saying how many could not be `verb`."""
    failed = 0
    for path in images:
        try:
            answer = compute(path).model_copy(update={"file": path})
        except ClipGazeError as exc:
            if len(images) == 1:
                raise
            failed += 1
            say(f"Error: {exc.message}", err=True)
            if as_json:
                say(json.dumps({"ok": False, "file": path, "status": exc.status, "code": exc.code, "error": exc.message}))
            continue
        say(answer.model_dump_json() if as_json else show(answer))
    if failed:
        raise click.ClickException(f"{failed} of {len(images)} images could not be {verb}")


def say(text: str, err: bool = False) -> None:
    """click.echo for everything the commands print: names from files, sources and the API included."""
    click.echo(shown(text), err=err)


def domain_errors(fn: F) -> F:
    """Turn clip-gaze's errors (and bad settings) into one readable line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClipGazeError as exc:
            raise click.ClickException(shown(exc.message)) from None
        except ValueError as exc:  # settings
            raise click.ClickException(shown(str(exc))) from None

    return wrapper  # type: ignore[return-value]


def split_vocabs(values: Sequence[str]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


class _Bar:
    """tqdm on stderr, as a context manager the engine's indexing and a collection's add accept."""

    def __init__(self, total: int, desc: str, unit: str = " phrases"):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5,
                         dynamic_ncols=True, smoothing=0.05)

    def __enter__(self) -> Any:
        return self._bar

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


PROGRESS_EVERY = 5.0  # seconds between two progress lines off a terminal


class ProgressLines:
    """Progress for a log rather than a terminal: one plain line on stderr every `every` seconds
    ("adding pictures: 120 of 3,000 (4%), 11.8 a second, about 4 min left") and, after those, one at
    the end, so a job run by cron, CI or `nohup` shows it is alive without a bar's carriage returns. A
    run shorter than `every` prints nothing, and one stopped by an error no last line."""

    def __init__(self, total: int, desc: str, every: float | None = None, clock: Callable[[], float] | None = None,
                 write: Callable[[str], None] | None = None):
        import time

        self.total, self.desc = total, desc
        self.every = PROGRESS_EVERY if every is None else every
        self.said = 0
        self._clock = clock or time.monotonic
        self._write = write or (lambda line: say(line, err=True))
        self.done = 0
        self._started = self._last = self._clock()

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done:,} of {self.total:,} ({100 * self.done / max(self.total, 1):.0f}%)"
        if self.done:
            text += f", {rate:.1f} a second"
            left = (self.total - self.done) / rate if rate > 0 else 0
            if self.done < self.total and left >= 1:
                text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        return text

    def update(self, n: int) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self.said += 1
            self._write(self.line())

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if self.said and kind is None:
            self._write(self.line())


def progress_for(total: int, desc: str, unit: str = " phrases") -> Any:
    """A bar on a terminal, else a line every few seconds (ProgressLines)."""
    if sys.stderr.isatty():
        return _Bar(total, desc, unit)
    return ProgressLines(total, desc)


def make_engine(model: str | None, progress: bool = True) -> "Engine":
    from indexer.engine import Engine

    notice = (lambda message: say(message + "…", err=True)) if progress else None
    return Engine.from_settings(load_settings(), model, progress=progress_for if progress else None, notice=notice)


def make_collections(model: str | None, progress: bool = True) -> "Collections":
    """The collections of the data directory, beside an engine for `model`."""
    from indexer.collections.local import Collections

    return Collections(make_engine(model, progress))


MODEL_OPTION = click.option("--model", "-m", help="Preset, ARCH:PRETRAINED or ARCH:/path/to/checkpoint (default: $CLIP_GAZE_MODEL or vit-b-32).")
VOCAB_OPTION = click.option("--vocab", "-v", "vocab", multiple=True, help="Vocabulary names, comma-separated; may be repeated (default: the default set).")


def confirm_delete(what: str, name: str, holding: str, yes: bool) -> None:
    """Ask before deleting (`--yes` skips); without a terminal to ask on, refuse in one line."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(f"deleting {what} {name!r} ({holding}) needs --yes when not run interactively")
    click.confirm(f"Delete {what} {name!r} and its {holding}?", abort=True)

RELATIVE_OPTION = click.option(
    "--relative-to", "relative_to", metavar="COLLECTION",
    help="Set each phrase's score against how it scores across COLLECTION's pictures (hub phrases stop dominating).",
)
