"""Process and file-system helpers of the harness, bound at import so that a candidate patching
`os` or `signal` cannot change what the harness's own cleanup does."""

import os
import signal

# (`os._exit = lambda code: None` would otherwise let a child fall back into dispatcher code).
_os_exit = os._exit
_os_kill = os.kill
_os_killpg = os.killpg
_os_write = os.write
_SIGKILL = signal.SIGKILL
_prctl = None  # libc's prctl, loaded once in main (see _die_with_parent)
_PR_SET_PDEATHSIG = 1

# What a privileged (root) harness needs, as capability names and bit numbers. Measured under gVisor
# with a reduced bounding set (docs/design-notes.md "Launchers"); a pod adds exactly these
# (components/execute/sandbox_job.py):
# - SETUID, SETGID: a child becomes its slot's uid (setgroups, setgid, setuid);
# - CHOWN: each slot's work directory is given to the slot's uid;
# - DAC_OVERRIDE: the dispatcher empties a slot's directory after each code, whatever modes the
#   candidate left on its files, and the executor removes the whole batch folder afterwards;
# - KILL: the dispatcher kills a child of another uid at once (a timeout, a flood on its pipe).
REQUIRED_CAPABILITIES = {"CHOWN": 0, "DAC_OVERRIDE": 1, "KILL": 5, "SETGID": 6, "SETUID": 7}


def missing_capabilities():
    """Names of the REQUIRED_CAPABILITIES this process does not hold (effective set). A root
    harness without them would fail every child's setup, code after code; say so up front."""
    try:
        with open("/proc/self/status") as handle:
            effective = next(int(line.split()[1], 16) for line in handle if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):  # not Linux: no capabilities to check
        return []
    return sorted(name for name, bit in REQUIRED_CAPABILITIES.items() if not effective >> bit & 1)


def _die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent dies (call it again after a uid
    change, which clears the setting).

    Inside runsc a killed sandbox takes everything with it; without one (`pod`, `unsafe-none`)
    a harness killed from outside would otherwise leave candidates running, orphaned.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before we asked
        _os_exit(0)


def _kill_uid_processes():
    """SIGKILL every other process of the caller's uid, again and again until none is left
    (a fork bomb forks between two rounds). The kernel answers ESRCH when none is left."""
    for _ in range(1000):
        try:
            _os_kill(-1, _SIGKILL)
        except ProcessLookupError:
            return
        except OSError:
            return


def _clean_directory(path, keep, truncate=False):
    """Empty a work directory except the output file (truncated when `truncate`)."""
    for name in os.listdir(path):
        target = os.path.join(path, name)
        if name == keep:
            if truncate:
                os.truncate(target, 0)
        else:
            _remove_tree(target)


def _remove_tree(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            for name in os.listdir(path):
                _remove_tree(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _load_prctl():
    global _prctl
    try:
        import ctypes
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux: no parent-death signal
        _prctl = None
