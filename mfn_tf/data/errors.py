"""The exception that every data-layer check raises."""


class DatasetError(ValueError):
    """A dataset file that is missing, malformed or inconsistent.

    The message names the file and, for a record, its index, and gives the
    command or edit that fixes it.
    """
