"""
Finding matcher factories: built-in and third-party, through one mechanism.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from ._errors import DuplicateMatcherError, UnknownMatcherError
from ._interfaces import IMatcherFactory

ENTRY_POINT_GROUP = "demux.matchers"


def _load(entryPoint: EntryPoint) -> IMatcherFactory:
    factory = entryPoint.load()
    try:
        verifyObject(IMatcherFactory, factory)
    except Invalid as e:
        raise DuplicateMatcherError(
            f"matcher plugin {entryPoint.value} does not provide "
            f"IMatcherFactory: {e}"
        ) from None
    if factory.name != entryPoint.name:
        raise DuplicateMatcherError(
            f"matcher plugin {entryPoint.value} is registered as "
            f"{entryPoint.name!r} but calls itself {factory.name!r}"
        )
    return factory


def matcherFactories(
    entryPoints: Iterable[EntryPoint] | None = None,
) -> Mapping[str, IMatcherFactory]:
    """
    Every installed matcher factory, by name.

    @param entryPoints: the entry points to load; by default those of the
        C{demux.matchers} group of every installed distribution.
    @raise DuplicateMatcherError: if two distributions register the same
        name, naming both, or if a plugin is not an L{IMatcherFactory}.
    """
    if entryPoints is None:
        entryPoints = entry_points(group=ENTRY_POINT_GROUP)
    found: dict[str, tuple[EntryPoint, IMatcherFactory]] = {}
    for ep in entryPoints:
        if ep.name in found:
            first = found[ep.name][0]
            if first.value == ep.value:
                # The same distribution seen twice on sys.path.
                continue
            raise DuplicateMatcherError(
                f"two plugins provide the matcher {ep.name!r}: "
                f"{first.value} and {ep.value}"
            )
        found[ep.name] = (ep, _load(ep))
    return {name: factory for name, (ep, factory) in sorted(found.items())}


def findMatcherFactory(
    name: str, factories: Mapping[str, IMatcherFactory]
) -> IMatcherFactory:
    """
    The factory called C{name}.

    @raise UnknownMatcherError: naming the matchers that do exist.
    """
    try:
        return factories[name]
    except KeyError:
        known = ", ".join(sorted(factories)) or "none"
        raise UnknownMatcherError(
            f"unknown matcher {name!r} (installed matchers: {known})"
        ) from None
