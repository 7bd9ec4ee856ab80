"""The models a server serves: one engine per model, all over one data directory (phrases and pictures
are stored once per model, as with one), each made on first use (its model loads on first use too, or
at start with `preload`). A request names one by its `model` field; none names the default (the first).

A model is found by the name it is served under (as CLIP_GAZE_MODELS gives it), by its preset, by
`ARCH:PRETRAINED`, or for a checkpoint by `ARCH:file-name` (clients never see a server's folders).
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Sequence

from ..engine import Engine
from ..errors import ClipGazeError, NotFound
from ..models.registry import ModelSpec, parse_model, public_model_name
from ..schema import ModelInfo, ServedModel

MB = 1024 * 1024


class ServedModels:
    """`names` in order (the first is the default); `make(name)` builds the engine of one; `given` are
    engines already made (a test's, or the default one handed to a server)."""

    def __init__(self, names: Sequence[str], make: Callable[[str], Engine], given: Mapping[str, Engine] | None = None):
        if not names:
            raise ValueError("at least one model is served")
        self.names = list(dict.fromkeys(names))
        self._make = make
        self._engines: dict[str, Engine] = dict(given or {})
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._aliases: dict[str, str] | None = None

    @property
    def default(self) -> str:
        return self.names[0]

    def made(self) -> dict[str, Engine]:
        """The engines made so far, by served name."""
        return dict(self._engines)

    # -- finding ----------------------------------------------------------------------------------
    def _spec(self, name: str) -> ModelSpec | None:
        engine = self._engines.get(name)
        if engine is not None:
            return engine.spec
        try:
            return parse_model(name)
        except ClipGazeError:
            return None  # reported when it is asked for (its engine cannot be made)

    def aliases(self) -> dict[str, str]:
        """Every way a request may name each served model → its served name (the first one served wins)."""
        if self._aliases is None:
            found: dict[str, str] = {}
            for name in self.names:
                spec = self._spec(name)
                ways = [name, public_model_name(name)]
                if spec is not None:
                    ways += [spec.name, public_model_name(spec.name), f"{spec.arch}:{spec.info().pretrained}"]
                for way in ways:
                    found.setdefault(way.strip().lower(), name)
            self._aliases = found
        return self._aliases

    def resolve(self, model: str | None) -> str:
        """The served name of `model` (the default when None); NotFound `unknown_model` (404) otherwise."""
        if model is None:
            return self.default
        name = self.aliases().get(model.strip().lower())
        if name is None:
            shown = ", ".join(public_model_name(n) for n in self.names)
            raise NotFound(f"unknown model {public_model_name(model)!r}: this server serves {shown} (GET /v1/models)",
                           code="unknown_model")
        return name

    def engine(self, model: str | None = None) -> Engine:
        """The engine of `model` (see `resolve`), made on first use; its model loads when first used."""
        name = self.resolve(model)
        engine = self._engines.get(name)
        if engine is None:
            with self._lock:
                engine = self._engines.get(name)
                if engine is None:
                    try:
                        engine = self._engines[name] = self._make(name)
                    except ClipGazeError as exc:
                        self._errors[name] = exc.message
                        raise
        return engine

    # -- loading ----------------------------------------------------------------------------------
    def preload(self) -> None:
        """Every served model made and loaded now (`serve --preload`); one that fails keeps its error
        (GET /v1/health) and the others still load."""
        for name in self.names:
            self.load(name)

    def load(self, name: str) -> bool:
        try:
            _ = self.engine(name).model
            self._errors.pop(name, None)
            return True
        except ClipGazeError as exc:
            self._errors[name] = exc.message
            return False

    # -- describing -------------------------------------------------------------------------------
    def served(self, shown: Callable[[str | None], str | None] = lambda text: text) -> list[ServedModel]:
        """Each served model as clients see it (`shown` takes server folders out of error messages).
        Never loads anything."""
        out = []
        for name in self.names:
            engine = self._engines.get(name)
            spec = engine.spec if engine is not None else self._spec(name)
            cost = engine.load_cost if engine is not None else None
            loaded = engine is not None and engine.model_loaded
            error = self._errors.get(name)
            out.append(ServedModel(
                name=public_model_name(name), default=name == self.default,
                state="loaded" if loaded else "error" if error else "not_loaded",
                model=engine.model_info() if engine is not None else spec.info() if spec is not None else _unknown(name),
                memory_mb=_mb(cost.rss_growth) if cost else None, weights_mb=_mb(cost.weights) if cost else None,
                load_seconds=round(cost.seconds, 3) if cost else None, error=shown(error) if error else None,
            ))
        return out


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _unknown(name: str) -> ModelInfo:
    """A served name that does not parse (its error says why), as clients see it."""
    arch, _, pretrained = public_model_name(name).partition(":")
    return ModelInfo(preset=None, arch=arch, pretrained=pretrained)


__all__ = ["ServedModels"]
