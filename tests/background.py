"""Work of the suite that lives in other processes (the example and derivation scripts, the main job, multi-process
and multi-device runs) starts in the background when collection ends and runs on the second core while the rest of
the suite runs on the first; the tests that check its outputs run last and only wait (conftest.py).

A test module declares its jobs in a module-level dict ``JOBS`` (name: :class:`Script` or :class:`Command`); a test
names the jobs it reads with ``@pytest.mark.background("name", ...)`` and gets their :class:`Result` from the
``background`` fixture: ``background("name")``. Only the jobs of the selected tests run.

Under pytest-xdist one worker (gw0) runs the jobs, in a folder that the controller made and removes at the end, and
writes each finished job's :class:`Result` there (:func:`result_path`), where a test on any worker reads it."""

import hashlib
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: in a job's command line (anywhere in an argument): the job's own output folder, and a free TCP port shared by the
#: job's processes
FOLDER, PORT = "<job folder>", "<free port>"


@dataclass(frozen=True)
class Script:
    """A script run as ``__main__`` (``path``; ``ROOT / "pdlt"`` is ``python -m pdlt``) with ``sys.argv[1:] = argv``,
    in a child forked from a server that has pdlt, JAX, sympy and matplotlib imported (about 2 s a process, paid once).
    ``cost``: rough seconds on one core; the longest jobs start first."""

    path: Path
    argv: tuple = ()
    cost: float = 3.0
    timeout: float = 600.0


@dataclass(frozen=True)
class Command:
    """Processes started together (``argvs``: one command line each, e.g. the two processes of a jax.distributed
    run), with ``env`` added to the environment (an ``XLA_FLAGS`` entry is appended to the suite's flags)."""

    argvs: tuple
    env: dict = field(default_factory=dict)
    cost: float = 3.0
    timeout: float = 240.0


@dataclass(frozen=True)
class Result:
    """``codes``: exit code of each process (``None``: killed after the job's timeout); ``outs``/``errs``: its
    stdout and stderr (a script's are one log, in ``outs``); ``folder``: the job's output folder."""

    codes: tuple
    outs: tuple
    errs: tuple
    folder: Path

    @property
    def hung(self) -> bool:
        return any(c is None for c in self.codes)

    def show(self) -> str:
        """What a failed assertion should print: each process's exit code and the ends of its output."""
        return "\n".join(f"process {i}: exit code {c}\n{o[-3000:]}\n{e[-3000:]}"
                         for i, (c, o, e) in enumerate(zip(self.codes, self.outs, self.errs)))


def result_path(shared: Path, key) -> Path:
    """Where the runner of a shared job folder writes the :class:`Result` of job ``key`` (``(module file, name)``)."""
    return shared / f"result-{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}.pickle"


def read_result(shared: Path, key, timeout: float) -> Result:
    """The :class:`Result` of job ``key`` from a shared job folder, waiting up to ``timeout`` seconds for it."""
    path, end = result_path(shared, key), time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            return Result((None,), (f"no result after {timeout:.0f} s (the worker that runs the jobs, gw0, never "
                                    "wrote one)",), ("",), shared)
        time.sleep(0.2)
    with open(path, "rb") as f:
        return pickle.load(f)


def python(code: str, *args) -> tuple:
    """The command line ``python -c code args...``."""
    return (sys.executable, "-c", code, *args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(proc):
    """Kill a job's process: a command's whole session (its own children too), a script's process."""
    if isinstance(proc, subprocess.Popen):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):    # gone already; Windows: no process groups
            proc.kill()
    else:
        proc.kill()


def _child(script, argv, log):
    """A :class:`Script` in a forked child: stdout and stderr (its own children's too) go to ``log``;
    multiprocessing turns an exception or ``sys.exit`` into the exit code."""
    import runpy

    # a job ends with the process that started it: once the forkserver, which exits with that process, is gone, so is
    # the job (on Ctrl-C the pytest-xdist controller tears its workers down without waiting for their cleanup; without
    # this, jobs outlived an interrupted session by 10-20 s)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    if Path(script) == ROOT / "pdlt":
        sys.argv[0] = "pdlt"
        runpy.run_module("pdlt", run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(script, run_name="__main__")


class Background:
    """The jobs (``{key: Script or Command}``), started at once on a thread pool: one runs at a time until
    :meth:`widen` (the main process has reached the tests that only wait), then two. :meth:`close` kills what still
    runs (an interrupted session leaves nothing behind) and removes the output folders, unless :attr:`keep` (under
    pytest-xdist they lie in the ``shared`` folder, which the controller removes)."""

    def __init__(self, jobs, shared: Path | None = None):
        # shared: the controller's folder (pytest-xdist), which it removes itself; results are written there too
        self.shared = shared
        self.root = Path(tempfile.mkdtemp(prefix="pdlt-jobs-", dir=shared))
        self.ctx = None
        if any(isinstance(j, Script) for j in jobs.values()):
            if "forkserver" in multiprocessing.get_all_start_methods():
                self.ctx = multiprocessing.get_context("forkserver")
                self.ctx.set_forkserver_preload(["numpy", "scipy.stats", "sympy", "jax", "matplotlib.pyplot", "pdlt",
                                                 "pdlt.theory.ntk_statistics", "pdlt.montecarlo"])
            else:  # Windows: a fresh interpreter per script
                self.ctx = multiprocessing.get_context("spawn")
        self.permits = threading.Semaphore(1)
        self.lock = threading.Lock()
        self.widened = self.closed = self.keep = False
        self.procs = set()
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures = {}
        for i, (key, job) in enumerate(sorted(jobs.items(), key=lambda kv: -kv[1].cost)):
            folder = self.root / f"job{i}"
            folder.mkdir()
            self.futures[key] = self.pool.submit(self._run, job, folder)
            if shared is not None:
                self.futures[key].add_done_callback(lambda fut, key=key: self._publish(key, fut))

    def _publish(self, key, fut):
        res = fut.result() if not fut.cancelled() else Result((None,), ("not run: the session ended",), ("",),
                                                                self.root)
        path = result_path(self.shared, key)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(res, f)
        os.replace(tmp, path)

    def wait(self):
        """Let every job finish (the other workers may still read them)."""
        self.widen()
        for fut in list(self.futures.values()):
            try:
                fut.result()
            except Exception:   # a job's own error is in its Result; this only waits
                pass

    def result(self, key) -> Result:
        return self.futures[key].result()

    def _run(self, job, folder):
        with self.permits:
            with self.lock:
                if self.closed:
                    return Result((None,), ("not run: the session ended",), ("",), folder)
            if isinstance(job, Script):
                return self._script(job, folder)
            return self._command(job, folder)

    def _script(self, job, folder):
        log = folder.with_suffix(".txt")
        argv = [str(a).replace(FOLDER, str(folder)) for a in job.argv]
        with self.lock:
            if self.closed:
                return Result((None,), ("not run: the session ended",), ("",), folder)
            proc = self.ctx.Process(target=_child, args=(str(job.path), argv, str(log)))
            proc.start()
            self.procs.add(proc)
        proc.join(job.timeout)
        code = proc.exitcode
        if proc.is_alive():
            proc.kill()
            proc.join()
            code = None
        with self.lock:
            self.procs.discard(proc)
        out = log.read_text(errors="replace") if log.exists() else ""
        return Result((code,), (out if code is not None else out + f"\n[killed after {job.timeout:.0f} s]",), ("",),
                      folder)

    def _command(self, job, folder):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])   # this source
        for k, v in job.env.items():
            env[k] = f"{env[k]} {v}" if k == "XLA_FLAGS" and env.get(k) else v
        port = str(free_port())
        # output to files, not pipes: processes that wait on each other cannot block on a full pipe; each job in its
        # own session, so that a timeout or the session's end kills its processes' children too
        logs = [(folder.with_name(f"{folder.name}-{i}.out"), folder.with_name(f"{folder.name}-{i}.err"))
                for i in range(len(job.argvs))]
        with self.lock:
            if self.closed:
                return Result((None,), ("not run: the session ended",), ("",), folder)
            procs = []
            for argv, (out, err) in zip(job.argvs, logs):
                with open(out, "w") as fo, open(err, "w") as fe:
                    procs.append(subprocess.Popen([a.replace(FOLDER, str(folder)).replace(PORT, port) for a in argv],
                                                  env=env, cwd=ROOT, stdout=fo, stderr=fe, start_new_session=True))
            self.procs.update(procs)
        deadline = time.monotonic() + job.timeout
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                for q in procs:
                    _kill(q)
                p.wait()
                codes.append(None)
        with self.lock:
            self.procs.difference_update(procs)
        outs = tuple(out.read_text(errors="replace") for out, _ in logs)
        errs = tuple(err.read_text(errors="replace") + ("" if c is not None else f"\n[killed after {job.timeout:.0f} s]")
                     for (_, err), c in zip(logs, codes))
        return Result(tuple(codes), outs, errs, folder)

    def widen(self):
        """The main process now only waits on these: let two jobs run at once."""
        with self.lock:
            if not self.widened:
                self.widened = True
                self.permits.release()

    def close(self):
        with self.lock:
            self.closed = True
            for proc in self.procs:
                _kill(proc)
        self.pool.shutdown(wait=True, cancel_futures=True)
        if not self.keep and self.shared is None:
            shutil.rmtree(self.root, ignore_errors=True)
