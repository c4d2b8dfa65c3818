"""Parts of ``pdlt verify`` in a second Python process, so that the main job uses two cores.

The Monte Carlo sections are independent (each samples its own networks from its own seeds), and much of their time
is single-threaded (tracing and compiling small JAX programs, Python around them). :func:`start` runs some of them in
a child process while the caller runs the rest; :meth:`SecondProcess.results` waits for the child and returns what
each part returned, with the lines the part printed (it is given ``echo=list.append``) and its warnings re-issued in
the caller, so the printed report and the CLI's warning lines are those of a run in one process.

The child is ``python -m pdlt.verification.second_process FOLDER`` (its calls, results and log), not a
``multiprocessing`` child: ``spawn`` and ``forkserver`` import the caller's ``__main__`` again (a user script
without a main guard would run twice), and ``fork`` after JAX has started threads can deadlock. It ignores SIGINT (a
Ctrl-C in a terminal reaches the whole process group; the caller decides) and exits as soon as its stdin closes,
i.e. when the caller exits however it ends (a SIGTERM handler's ``os._exit`` included), so it never outlives the job.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass

__all__ = ["SecondProcess", "start"]


@dataclass
class SecondProcess:
    """A running child (:func:`start`) and its folder."""

    proc: subprocess.Popen
    folder: tempfile.TemporaryDirectory

    def results(self) -> list:
        """Wait for the child; per call ``(returned value, printed lines)``. The child's warnings are issued here
        (their own category, message and location). An exception of a part is raised here again (its own type
        where it can be pickled, else a RuntimeError with its text), with the child's traceback as a note."""
        try:
            code = self.proc.wait()
            out = os.path.join(self.folder.name, "out.pickle")
            if code != 0 or not os.path.exists(out):
                log = _tail(os.path.join(self.folder.name, "log"))
                raise RuntimeError(f"the second process of pdlt verify ended with exit code {code} before returning "
                                   f"its results{': ' + log if log else ''}; rerun with processes=1 (--processes 1)")
            with open(out, "rb") as f:
                status, payload, caught = pickle.load(f)
        finally:
            self.close()
        for message, category, filename, lineno in caught:
            warnings.warn_explicit(message, category, filename, lineno)
        if status == "error":
            err, text = payload
            err = err if isinstance(err, BaseException) else RuntimeError(err)
            err.add_note(f"raised in the second process of pdlt verify:\n{text}")
            raise err
        return payload

    def close(self):
        """Stop the child if it still runs and remove its files (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.folder.cleanup()


def start(calls) -> SecondProcess:
    """Run ``calls`` (``[(\"module:function\", kwargs), ...]``, each called with ``echo=`` a list's append) in order
    in a child process. Call :meth:`SecondProcess.results` (or ``close``) exactly once."""
    folder = tempfile.TemporaryDirectory(prefix="pdlt-verify-")
    with open(os.path.join(folder.name, "in.pickle"), "wb") as f:
        pickle.dump(tuple(calls), f)
    with open(os.path.join(folder.name, "log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", __name__, folder.name], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT)
    return SecondProcess(proc, folder)


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


def _exit_with_parent():
    # stdin is the caller's pipe: it reads EOF when the caller exits, however it ends (the raw descriptor: a
    # buffered reader's lock would still be held at the interpreter's shutdown)
    try:
        while os.read(0, 65536):
            pass
    finally:
        os._exit(1)


def _child(folder: str):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    with open(os.path.join(folder, "in.pickle"), "rb") as f:
        calls = pickle.load(f)
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for path, kwargs in calls:
                module, name = path.split(":")
                lines = []
                value = getattr(importlib.import_module(module), name)(echo=lines.append, **kwargs)
                results.append((value, lines))
            status, payload = "ok", results
        except Exception as err:
            status, payload = "error", (err, traceback.format_exc())
    record = [(w.message, w.category, w.filename, w.lineno) for w in caught]
    tmp = os.path.join(folder, "out.tmp")
    with open(tmp, "wb") as f:
        try:
            pickle.dump((status, payload, record), f)
        except Exception as err:   # an unpicklable value, exception or warning: its text still reaches the caller
            f.seek(0)
            f.truncate()
            if status == "error":
                message, text = f"{type(payload[0]).__name__}: {payload[0]}", payload[1]
            else:
                message, text = f"a result could not be sent back ({type(err).__name__}: {err})", traceback.format_exc()
            pickle.dump(("error", (message, text), [(str(m), UserWarning, fn, ln) for m, _, fn, ln in record]), f)
    os.replace(tmp, os.path.join(folder, "out.pickle"))


if __name__ == "__main__":
    _child(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)   # not the interpreter's shutdown: the stdin thread is still blocked in its read
