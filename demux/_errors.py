"""
The one error hierarchy of demux.

Every error a user can cause by what they configure is a L{ConfigError} whose
message is one sentence naming the place (file, route, key), so that
C{twistd demux} can print it as one line and exit, never as a traceback.
"""

from __future__ import annotations


class DemuxError(Exception):
    """
    The root of every error demux raises on purpose.
    """


class ConfigError(DemuxError):
    """
    A configuration cannot be used.

    @ivar where: the place of the mistake, for example
        C{"demux.toml: route 'discovery': match.tls.sni"}, or C{""} when the
        message already says it.
    @ivar message: what is wrong with it, as one sentence.
    """

    def __init__(self, message: str, where: str = "") -> None:
        self.message = message
        self.where = where
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.where:
            return f"{self.where}: {self.message}"
        return self.message

    def at(self, where: str) -> ConfigError:
        """
        The same error with C{where} put in front of the place it already
        names, so that each layer of the loader can add its part of the path.
        """
        if self.where:
            where = f"{where}: {self.where}"
        return type(self)(self.message, where)


class MatcherConfigError(ConfigError):
    """
    A matcher factory was given options it cannot build a matcher from.

    Matcher factories raise it with just the message; the loader adds the
    place.
    """


class UnknownMatcherError(ConfigError):
    """
    A route names a matcher that no installed plugin provides.
    """


class DuplicateMatcherError(DemuxError):
    """
    Two installed plugins claim the same matcher name.
    """
