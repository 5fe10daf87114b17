"""Finds probes through the ``heartmon.probes`` entry-point group, built-ins included.

One discovery path for everything means a third-party probe is a first-class citizen:
it is listed, described and injectable exactly like ``gil-hold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points

from heartmon.probes.base import Probe, ProbeError

GROUP = "heartmon.probes"


class UnknownProbeError(ProbeError, KeyError):
    """A probe name the registry does not know: a ProbeError, like every other reason a
    probe cannot run, so a worker reports it as one. Still a KeyError (a lookup that
    failed) for callers that already catch that."""

    __str__ = Exception.__str__  # the message itself, not KeyError's repr of it


@dataclass(frozen=True)
class ProbeRegistry:
    probes: dict[str, type[Probe]]
    broken: dict[str, str] = field(default_factory=dict)
    """Entry points that failed to load, with the reason: shown, never fatal."""

    def names(self) -> list[str]:
        return sorted(self.probes)

    def get(self, name: str) -> type[Probe]:
        """The probe called ``name``; an UnknownProbeError that lists the known ones."""
        try:
            return self.probes[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownProbeError(f"unknown probe {name!r}; known probes: {known}") from None

    def describe(self) -> list[dict[str, str]]:
        return [
            {"name": name, "description": cls.description, "demonstrates": cls.demonstrates}
            for name, cls in sorted(self.probes.items())
        ]


def load_registry() -> ProbeRegistry:
    probes: dict[str, type[Probe]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take heartmon down with it
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, Probe)):
            broken[ep.name] = f"{ep.value} is not a heartmon Probe subclass"
            continue
        probes[ep.name] = cls
    return ProbeRegistry(probes, broken)
