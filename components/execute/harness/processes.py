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
