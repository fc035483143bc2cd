"""Finds the dhess executable and mpiexec, runs them, and turns a failure into a DhessError."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

from .errors import DhessError

ERROR_PREFIX = "dhess: error: "
# The build next to the package: python/dhess/ -> the repository root -> build/dhess.
SOURCE_TREE_BUILD = Path(__file__).resolve().parents[2] / "build" / "dhess"
# `pip install .` puts the executable among the environment's scripts (its bin/), active or not.
ENVIRONMENT_SCRIPT = Path(sysconfig.get_path("scripts")) / "dhess"


def executable():
    """$DHESS_EXE, else the build of this source tree, else the one `pip install .` put beside this
    Python, else `dhess` on PATH: the package drives the executable built with it."""
    chosen = os.environ.get("DHESS_EXE")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise DhessError(f"$DHESS_EXE is '{chosen}', which is not an executable file")
        return chosen
    for built in (SOURCE_TREE_BUILD, ENVIRONMENT_SCRIPT):
        if os.access(built, os.X_OK):
            return str(built)
    on_path = shutil.which("dhess")
    if on_path:
        return on_path
    raise DhessError(f"cannot find the dhess executable: set $DHESS_EXE, build it into {SOURCE_TREE_BUILD} "
                     "(bash scripts/build.sh), or put dhess on PATH")


def launcher(ranks):
    """The command prefix for `ranks` MPI ranks: none for one (dhess starts as an MPI singleton),
    else $DHESS_MPIEXEC (split like a shell line, so it may carry options) or mpiexec/mpirun on PATH."""
    if ranks < 1:
        raise ValueError(f"ranks must be at least 1, not {ranks}")
    if ranks == 1:
        return []
    chosen = os.environ.get("DHESS_MPIEXEC")
    prefix = shlex.split(chosen) if chosen else [shutil.which("mpiexec") or shutil.which("mpirun")]
    if not prefix or not prefix[0]:
        raise DhessError(f"ranks={ranks} needs mpiexec or mpirun on PATH (or $DHESS_MPIEXEC)")
    return prefix + ["-n", str(ranks)]


def run(command, progress):
    """Runs `command`, echoing its progress (stdout) when `progress` and dhess's warnings live;
    raises DhessError with dhess's one-line message when it fails. Other stderr text (mpiexec's
    reports) is held back: shown after a success, attached to the error after a failure."""
    held = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                          start_new_session=True) as process:
        pump = threading.Thread(target=_pump_stderr, args=(process.stderr, held), daemon=True)
        pump.start()
        try:
            for line in process.stdout:
                if progress:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            process.wait()
        except BaseException:
            _stop(process)
            raise
        finally:
            pump.join()
    _settle(process.returncode, held)


def _pump_stderr(stream, held):
    """dhess's own lines (warnings) are worth seeing while the run goes on; the rest waits."""
    for line in stream:
        if line.startswith("dhess: ") and not line.startswith(ERROR_PREFIX):
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            held.append(line)


def _settle(returncode, held):
    text = "".join(held)
    if returncode == 0:
        sys.stderr.write(text)
        return
    errors = [line[len(ERROR_PREFIX):].strip() for line in held if line.startswith(ERROR_PREFIX)]
    raise DhessError(errors[-1] if errors else _no_message(returncode, text), returncode, text)


def _no_message(returncode, text):
    """A run that died without dhess's line (a killed rank, mpiexec refusing to start) still says why."""
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return " ".join(lines) if lines else "no message on stderr"


def _stop(process):
    """Ctrl-C in Python must not leave ranks running: SIGTERM makes dhess stop cleanly (exit 75),
    SIGKILL follows if it does not within 30 s. The run has its own process group (mpiexec and ranks)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
