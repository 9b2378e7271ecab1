"""Errors raised for bad input data. Every message names the file, line or column at fault."""


class DataError(ValueError):
    """Input data could not be read or does not have the expected shape."""
