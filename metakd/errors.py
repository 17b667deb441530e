"""Exceptions raised by metakd: every message names the file or key at fault and what was expected."""


class MetakdError(Exception):
    """Base class of all metakd errors."""


class DataError(MetakdError, ValueError):
    """A dataset root, file or episode request that cannot be served (names the file and what was expected)."""


class ConfigError(MetakdError, ValueError):
    """An unknown config key, a wrong type or an unknown registry name (names the key and the valid choices)."""
