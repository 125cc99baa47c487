"""Errors that carry a user-facing message naming the file, the line and the fix."""


class InputError(Exception):
    """Bad input data or configuration. The message says where (file:line) and what to do."""
