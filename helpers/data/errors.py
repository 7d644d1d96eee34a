"""The one error type for bad input data (re-exported as ``helpers.data.DataError``)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the offending file (and line/key/row) and says what to do."""
