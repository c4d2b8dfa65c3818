r"""Multi-process and multi-host Monte Carlo on JAX's own distributed runtime (``jax.distributed``).

A run with ``distributed=True`` (:func:`pdlt.sample`, :func:`pdlt.sample_ntk`, :func:`pdlt.sample_trained`) is one
run shared by the ``P = jax.process_count()`` processes that call it with the same arguments:

* **Shares.** The networks still to do, ``a..b-1``, are cut into chunks of ``c`` networks (the same ``c`` on every
  process); in round r process p samples chunk ``r P + p``, on its own local devices. Network s is still drawn from
  ``fold_in(key(seed), s)`` and summed into batch ``s mod B``, so the union over processes of the networks done
  after R rounds is the prefix ``a..min(a + R P c, b)-1`` and the result equals a one-process run with the same
  seed, whatever P and the device counts (up to the order of float64 additions, ~1e-15 relative).
* **One reduction.** Between synchronisation points a process adds its chunks' batch sums on its devices (no
  host round trip per chunk). At a synchronisation point every process contributes its sums with one
  ``process_allgather`` and adds the P contributions in process order, so every process holds the same state, that
  of a prefix of the networks: a checkpoint written then (by process 0 only) is an ordinary checkpoint, resumable
  with any number of processes, or with none. Points are agreed, never local: every ``k`` rounds, with ``k``
  proposed by process 0 from its round time (about one synchronisation per ``SYNC_SECONDS``), and after the last
  round. Signals (SIGINT, SIGTERM), the checkpoint timer and a ``callback``'s KeyboardInterrupt take effect at the
  next point, so every process stops after the same round.
* **Agreement.** Before sampling, the processes compare the fingerprints of their configurations, their networks and
  their local device counts; any difference is a :class:`pdlt.errors.DistributedError` naming the first process that
  differs. The chunk is the smallest any process chose (each may size it from its own free memory). An error while a
  process checks its arguments or plans stops every process before sampling. Process 0 alone reads the checkpoint
  (or ``resume=``) and its state is sent to the others, so other hosts need no shared file system.
* **Faults.** An error on one process (a bad setting only it has, a failing callback, its device out of memory, a
  checkpoint it cannot write) is held until the next exchange, where every process stops: that process with its
  error, the others with a :class:`pdlt.errors.DistributedError` naming it, after process 0 (unless it is the one
  that failed) has saved the state of the last synchronisation point. A process that dies breaks the next exchange:
  the survivors raise a DistributedError after the same save, unless the dead process was process 0, which runs
  JAX's coordination service: then JAX's runtime ends the others at once (an abort with its own log). JAX's runtime
  also ends a survivor some time after a failure (its heartbeat check), which is why the state is saved first. In
  every case the checkpoint of the last synchronisation point survives and rerunning the command with any number of
  processes resumes it. :func:`initialize` checks, before JAX does, that process 0's port is free and that the
  coordinator answers the others within ``timeout`` seconds: both are DistributedErrors, not a crash or a hang. A
  coordinator whose other processes never come is ended by JAX after ``timeout`` seconds.

>>> from pdlt.montecarlo.distributed import process_group
>>> process_group(False)
ProcessGroup(size=1, rank=0)
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DistributedError, ParameterError
from ..validation import check_int, check_real

__all__ = ["initialize", "ProcessGroup", "process_group", "SYNC_SECONDS"]

#: target wall time between two synchronisation points of a multi-process run (seconds)
SYNC_SECONDS = 1.0


def _reachable(host: str, port: int, timeout: float) -> str | None:
    """None once a TCP connection to ``host:port`` succeeds within ``timeout`` seconds, else the last error."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, left))):
                return None
        except OSError as err:
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() >= deadline:
            return last
        time.sleep(0.2)


def _split_address(address) -> tuple[str, int]:
    if not isinstance(address, str) or address.count(":") < 1:
        raise ParameterError(f"coordinator_address must be 'HOST:PORT', got {address!r}", "coordinator_address")
    host, _, port = address.rpartition(":")
    try:
        port = int(port)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ParameterError(f"coordinator_address must be 'HOST:PORT' with a port in 1..65535, got {address!r}",
                             "coordinator_address")
    return host.strip("[]"), port


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout: float = 60.0) -> "ProcessGroup":
    """Join (or start, for process 0) a ``jax.distributed`` run and return this process's :class:`ProcessGroup`.

    ``coordinator_address`` ``"HOST:PORT"`` (process 0 listens there), ``num_processes`` and ``process_id``
    (``0..num_processes-1``) as for ``jax.distributed.initialize``; all None lets JAX detect them from the cluster
    environment (SLURM, Open MPI, ...). A process other than 0 first waits up to ``timeout`` seconds for the
    coordinator to accept connections and raises :class:`pdlt.errors.DistributedError` if it does not (JAX itself
    would abort the process). Calling it again in an initialized process returns the group unchanged.
    """
    import jax

    timeout = check_real(timeout, "timeout", minimum=1.0)
    if jax.distributed.is_initialized():
        return ProcessGroup(jax.process_count(), jax.process_index())
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ParameterError("give coordinator_address, num_processes and process_id together (or none of them, to "
                             "let JAX detect a cluster)", "coordinator_address")
    if all(given):
        host, port = _split_address(coordinator_address)
        num_processes = check_int(num_processes, "num_processes", minimum=1)
        process_id = check_int(process_id, "process_id", minimum=0, maximum=num_processes - 1)
        if process_id == 0:
            # JAX's coordinator crashes the process (a segfault) when its port is taken: find out first
            try:
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                    # as a server binds: a port left in TIME_WAIT by the previous run is free, a listening one is not
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("", port))
            except OSError as err:
                raise DistributedError(f"process 0 cannot run the coordinator on port {port} ({err.strerror or err}); "
                                       "choose another port in coordinator_address") from None
        else:
            why = _reachable(host, port, timeout)
            if why is not None:
                raise DistributedError(
                    f"process {process_id}: the coordinator {coordinator_address} did not answer within {timeout:g} s "
                    f"({why}); start process 0 (it runs the coordinator) or fix coordinator_address, or raise timeout")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=max(1, int(round(timeout))))
    except Exception as err:     # RuntimeError / ValueError / XlaRuntimeError: all mean "cannot join"
        raise DistributedError(f"jax.distributed.initialize failed ({type(err).__name__}: {err}); check "
                               "coordinator_address, num_processes and process_id (or the cluster environment)"
                               ) from None
    return ProcessGroup(jax.process_count(), jax.process_index())


@dataclass(frozen=True)
class ProcessGroup:
    """The processes of one run: ``size`` of them, this one is ``rank`` (``jax.process_index()``)."""

    size: int
    rank: int

    def gather(self, vec: np.ndarray, what: str) -> np.ndarray:
        """``(size, m)`` float64: every process's ``vec`` ``(m,)`` in process order (``vec[None]`` alone).
        A failed collective raises :class:`~pdlt.errors.DistributedError` naming ``what`` was being exchanged."""
        vec = np.ascontiguousarray(vec, dtype=np.float64).reshape(-1)
        if self.size == 1:
            return vec[None]
        import jax
        from jax.experimental import multihost_utils

        try:
            with jax.enable_x64(True):
                out = np.asarray(multihost_utils.process_allgather(vec), dtype=np.float64)
        except Exception as err:     # gloo / NCCL errors surface as ValueError or XlaRuntimeError
            raise DistributedError(f"process {self.rank}: exchanging {what} with the other processes failed "
                                   f"({type(err).__name__}: {err})") from None
        return out.reshape(self.size, vec.size)

    def together(self, fn, what: str, failure: str):
        """``fn()`` here, then every process learns whether each one's ``fn`` succeeded, so that none waits for a
        process that failed: the failing process raises its own error, the others a DistributedError saying the
        first failing process ``failure`` (``what``: the exchange, for the message of a failed collective)."""
        failed = result = None
        try:
            result = fn()
        except Exception as err:         # any error: the others must not wait for this process
            failed = err
        flags = self.gather(np.array([float(failed is not None)]), what)[:, 0]
        if failed is not None:
            raise failed
        if np.any(flags):
            raise DistributedError(f"process {self.rank}: process {int(np.flatnonzero(flags)[0])} {failure}")
        return result


def process_group(distributed: bool) -> ProcessGroup:
    """The group a run is shared by: this process alone unless ``distributed`` (then ``jax.distributed`` must have
    been initialized, e.g. by :func:`initialize`; a one-process runtime is a plain run)."""
    if not distributed:
        return ProcessGroup(1, 0)
    import jax

    if not jax.distributed.is_initialized():
        raise ParameterError("distributed=True needs JAX's distributed runtime: call "
                             "pdlt.montecarlo.distributed.initialize(coordinator_address, num_processes, process_id) "
                             "(or jax.distributed.initialize) in every process first, or use distributed=False",
                             "distributed")
    return ProcessGroup(jax.process_count(), jax.process_index())


def agree(group: ProcessGroup, fingerprint: str | None, numbers: dict, *, smallest=(), failed=None) -> dict:
    """Check that every process runs the same configuration (``fingerprint``) with the same ``numbers`` (name ->
    integer), except those named in ``smallest``, where the smallest value wins (a chunk size each process derived
    from its own free memory); returns the agreed numbers. ``failed``: the error this process met while preparing
    (its ``fingerprint`` is then ignored): it is raised here after the exchange, and the other processes raise a
    DistributedError naming this process, so that nobody waits for a process that will never sample. Other
    differences: DistributedError naming the first process and setting that differ."""
    if group.size == 1:
        if failed is not None:
            raise failed
        return dict(numbers)
    names = sorted(numbers)
    ok = failed is None and fingerprint is not None
    fp = int(fingerprint[:13], 16) if ok else 0.0      # 52 bits: exact in float64
    mine = np.array([float(ok), fp] + [float(numbers[k]) if ok else 0.0 for k in names], dtype=np.float64)
    rows = group.gather(mine, "the run's configuration")
    if failed is not None:
        raise failed
    for p in range(group.size):
        if not rows[p, 0]:
            raise DistributedError(f"process {group.rank}: process {p} could not start the run (see its error); fix it "
                                   "and start every process again")
    what = ["configuration (network, inputs, seed, method, batches, dtype)"] + names
    for p in range(group.size):
        diff = [k for k, a, b in zip(what, rows[p, 1:], rows[0, 1:]) if a != b and k not in smallest]
        if diff:
            raise DistributedError(f"process {p} was started with a different {diff[0]} than process 0; start every "
                                   "process with the same arguments (and the same number of local devices)")
    out = {k: numbers[k] for k in names}
    for j, k in enumerate(names):
        if k in smallest:
            out[k] = int(rows[:, 2 + j].min())
    return out
