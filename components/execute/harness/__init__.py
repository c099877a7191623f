"""The execution harness: runs INSIDE the sandbox, standard library only.

Started once per batch (`python -I -m codedpo.components.execute.harness`), it reads the batch from stdin as JSON lines and
writes one JSON line per (code, test) outcome to stdout. It is the only code that runs untrusted
programs, and it is built so that one warm process serves thousands of executions:

* Main never runs candidate code. It compiles each problem's tests once (asserts rewritten, see
  `compile_test`), forks one dispatcher per worker slot (so the forks, ~20 ms each inside
  gVisor's ptrace platform, run on every core), and feeds them job numbers. A job is one code
  with its tests.
* A dispatcher runs a job in a child process that defines the code once and runs every test of
  it in turn, reporting each verdict over a pipe. Codes that pass a static gate (`recyclable`)
  share a recycled child: after each code it puts the interpreter back (`_Baseline.restore`) and
  retires itself if anything irreversible changed. Other codes get a child of their own.
* Limits are the kernel's (gVisor's): RLIMIT_AS (memory), RLIMIT_NPROC (processes), RLIMIT_FSIZE
  (output: stdout/stderr go to a file in the throw-away work dir), RLIMIT_CORE=0, and a per-test
  wall-clock deadline that the DISPATCHER enforces with SIGKILL, so no signal/alarm tampering in
  the child can stop it. There is no network (runsc --network=none; a NetworkPolicy on the
  cluster). Every harness process dies with its parent (PR_SET_PDEATHSIG).
* When running as root (the runsc sandbox, a pod), every fresh child takes the next uid of its
  slot's 100 (20000 + 100*slot + k): a child cannot signal the harness or other slots, and a
  leftover process never shares a uid with the next code. After every child, whatever it
  reported, a process that has become its uid kills that uid's processes. The harness's own
  environment holds nothing secret (gVisor lets any uid read /proc/1/environ).
* With `private_scratch` (the local bundle, which grants gVisor's SYS_ADMIN) a child's folder
  is a new tmpfs of `scratch_bytes` and the child has its own IPC and network namespaces.
* A pass is an explicit message from the harness code in the child after the test body ran to
  its end with every assert executed. Candidate exits (sys.exit, os._exit), crashes, or a
  dead child give failures with a reason; the remaining tests of that code run in a fresh child.

Threat model: gVisor is the isolation boundary, and the bundle's root (bundle.py) holds nothing
of the host's. Inside it the harness defeats the tampering an LLM-written program does in
practice (exiting early, killing the harness, patching builtins or AssertionError, objects whose
__eq__ is always true, fork/memory/output bombs). A program that walks the interpreter's frames
or object graph to rewrite the harness's state could forge its own verdict; the static gate
gives such a program a child of its own, so it cannot touch the verdicts of other codes.

The invariant that keeps a candidate from becoming root: after a candidate has run, nothing
running as root opens, creates, truncates, follows or walks a path that candidate could have
changed, and nothing is imported on an error path. Root makes each child's folder fresh (mkdir
in its own folder, then a tmpfs and the output file with O_EXCL|O_NOFOLLOW before the fork);
what is inside is emptied by the child's own uid (processes._clean_directory in a reclaimer),
and root then only unmounts a mount point or rmdirs an entry in its own folder. Details sent by
a child are checked against a closed grammar (details.py) before they are written.
"""
