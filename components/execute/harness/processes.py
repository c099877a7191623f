"""Process and file-system helpers of the harness, bound at import so that a candidate patching
`os` or `signal` cannot change what the harness's own cleanup does."""

import ctypes
import errno
import os
import signal
import stat
import time

# (`os._exit = lambda code: None` would otherwise let a child fall back into dispatcher code).
_os_exit = os._exit
_os_kill = os.kill
_os_killpg = os.killpg
_os_write = os.write
_os_read = os.read
_clock_gettime = time.clock_gettime
_SIGKILL = signal.SIGKILL
_libc = None  # libc, loaded once in main (prctl, unshare, mount)
_PR_SET_PDEATHSIG = 1

# unshare(2) and mount(2) flags (linux/sched.h, linux/fs.h).
# (No CLONE_NEWNS: gVisor's release in Debian 12 accepts it but keeps one mount table, so
# scratch mounts are made by the dispatcher on fresh folders only their uid may enter.)
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
OUTPUT_NAME = ".output"  # the candidate's stdout/stderr, in its folder (RLIMIT_FSIZE applies)

# What a privileged (root) harness needs, as capability names and bit numbers. Measured under gVisor
# with a reduced bounding set (docs/design-notes.md "Launchers"); a pod adds exactly these
# (components/execute/sandbox_job.py):
# - SETUID, SETGID: a child becomes its uid (setgroups, setgid, setuid);
# - CHOWN: each child's work directory is given to the child's uid;
# - DAC_OVERRIDE: the executor removes the whole batch folder afterwards, whatever modes the
#   candidates left on their (already emptied) directories;
# - KILL: the dispatcher kills a child of another uid at once (a timeout, a flood on its pipe).
REQUIRED_CAPABILITIES = {"CHOWN": 0, "DAC_OVERRIDE": 1, "KILL": 5, "SETGID": 6, "SETUID": 7}
# The local sandbox (`runsc run`) also grants gVisor's own SYS_ADMIN, so that each child gets
# a fresh tmpfs and private namespaces (`private_scratch`); a pod does not (Pod Security).
SYS_ADMIN = 21


def _effective_capabilities():
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1], 16) for line in handle if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):  # not Linux: no capabilities to check
        return None


def missing_capabilities(private_scratch=False):
    """Names of the REQUIRED_CAPABILITIES (and SYS_ADMIN for `private_scratch`) this process
    does not hold. A root harness without them would fail every child's setup; say so up front."""
    effective = _effective_capabilities()
    if effective is None:
        return []
    wanted = dict(REQUIRED_CAPABILITIES, **({"SYS_ADMIN": SYS_ADMIN} if private_scratch else {}))
    return sorted(name for name, bit in wanted.items() if not effective >> bit & 1)


def _die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent dies (call it again after a uid
    change, which clears the setting).

    Inside runsc a killed sandbox takes everything with it; without one (`pod`, `unsafe-none`)
    a harness killed from outside would otherwise leave candidates running, orphaned.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL)
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


def _uid_has_processes(uid):
    """Whether any process of `uid` exists (zombies included), from /proc, which the kernel
    writes and no candidate can change. Once the child is reaped, none can appear but from
    another process of that uid, so "none" stays true: no reclaimer is needed then."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    return True
            except OSError:  # it just exited
                pass
    return False


def _check(result, what):
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, "%s: %s" % (what, os.strerror(number)))


def _mount_scratch(path, uid, scratch_bytes):
    """As root, before any candidate can see it: a new size-limited tmpfs owned by `uid` on the
    fresh, empty folder `path` (which root just made in its own folder), and the output file in
    it, made with O_EXCL|O_NOFOLLOW. Returns the output file's fd."""
    options = ("size=%d,mode=0700,uid=%d,gid=%d" % (scratch_bytes, uid, uid)).encode()
    _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options), "mount tmpfs")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(os.path.join(path, OUTPUT_NAME), flags, 0o600)


def _unmount_scratch(path):
    """Drop a child's tmpfs (after its processes are dead): its files go with it, and root never
    walked them. `path` is a mount point in root's own folder, so the candidate cannot have
    moved it."""
    return _libc.umount2(path.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0


def _enter_private_namespaces():
    """In a fresh child, still root: its own IPC namespace (SysV shared memory, semaphores and
    message queues vanish with it) and network namespace (no abstract unix socket is shared)."""
    _check(_libc.unshare(_CLONE_NEWIPC | _CLONE_NEWNET), "unshare")


def _open_output_as_uid(workdir):
    """Without private scratch: the output file is opened AFTER the uid switch, so whatever a
    candidate left at that path is opened with the candidate's own rights, never root's."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    return os.open(os.path.join(workdir, OUTPUT_NAME), flags, 0o600)


def _clean_directory(path, keep=None):
    """Empty a directory (except `keep`), as the caller, never following a symlink. Called only
    by the candidate's own uid (a recycled child between codes, a reclaimer after a child): the
    directory's content is the candidate's, and root never walks it."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if name != keep:
            _remove_tree(os.path.join(path, name))


def _remove_tree(path):
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, 0o700)  # the owner may always give itself its rights back
            for name in os.listdir(path):
                _remove_tree(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _process_cpu_s(pid):
    """CPU seconds used so far by process `pid` (its CPU-time clock, which the kernel keeps and
    no candidate can set), or None where the clock cannot be read."""
    if _libc is None:
        return None
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    try:
        return _clock_gettime(clock.value)
    except OSError:
        return None


def _load_libc():
    global _libc
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        # resolved now, not after a candidate ran
        _libc.prctl, _libc.unshare, _libc.mount, _libc.umount2, _libc.clock_getcpuclockid
    except (OSError, AttributeError):  # not Linux: no parent-death signal, no private scratch
        _libc = None


def _remove_empty_directory(path):
    """rmdir by a privileged caller: it removes an empty directory entry and never follows or
    walks anything; a directory the reclaimer could not empty stays (and is reported)."""
    try:
        os.rmdir(path)
        return True
    except OSError as error:
        return error.errno == errno.ENOENT
