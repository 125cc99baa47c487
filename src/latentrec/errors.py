"""Errors that carry a user-facing message naming the file, the line and the fix."""


class InputError(Exception):
    """Bad input data or configuration. The message says where (file:line) and what to do."""


class DamagedFileError(InputError):
    """An output of an earlier job that can no longer be read (truncated, overwritten, half-copied)."""

    def __init__(self, path, reason: str, target=None):
        self.path = path
        target = target or path
        super().__init__(
            f"{path} is damaged and cannot be read ({reason}). It is an output of an earlier job that changed "
            f"after it was written (a truncated copy, a full disk, an edit). Regenerate it with "
            f"`snakemake --cores all --force {target}`, then rerun your command: the jobs that read it follow."
        )
