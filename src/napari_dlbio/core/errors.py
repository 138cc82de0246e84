"""Exceptions whose message is written for the user: what is wrong and what to do."""


class DlbioError(Exception):
    """Base class of every error the plugin reports to a user as a plain message."""


class InputDataError(DlbioError, ValueError):
    """An image, label or folder that cannot be used as given."""


class ConfigError(DlbioError, ValueError):
    """A configuration with unknown keys, wrong types or impossible values."""


class ModelFolderError(DlbioError, ValueError):
    """A model folder that is missing, incomplete, unsafe or made for another task."""
