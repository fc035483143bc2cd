"""The one exception the package raises for a failed run or a result it cannot read."""

# dhess's exit codes (README, "Exit codes and errors"): what kind of problem it was.
EXIT_KINDS = {
    64: "usage: bad flags or flag values",
    65: "input: bad model, data or checkpoint",
    70: "internal: a bug or a failing library call",
    74: "resource: memory, disk space or an unwritable path",
    75: "interrupted: stopped by a signal after writing a checkpoint",
}


class DhessError(RuntimeError):
    """dhess failed, or a result lacks what was asked of it.

    `message` is dhess's one-line `dhess: error: ...` text without the prefix (or the package's
    own reason); `exit_code` is the executable's exit status, None when it never ran or ran fine;
    `stderr` keeps what else the run printed there (mpiexec's reports), for the curious.
    """

    def __init__(self, message, exit_code=None, stderr=""):
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(self._describe())

    def _describe(self):
        if self.exit_code is None:
            return self.message
        kind = EXIT_KINDS.get(self.exit_code)
        code = f"exit {self.exit_code}" + (f", {kind}" if kind else "")
        return f"dhess failed ({code}): {self.message}"
