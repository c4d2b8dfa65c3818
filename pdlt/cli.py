"""The ``pdlt`` command (also ``python -m pdlt``).

    pdlt verify [--out DIR] [--quick] [--no-pdf] [--no-mc] [--processes 1|2]   derive, check against
                                                      independent oracles and Monte Carlo of sampled networks,
                                                      print tables
    pdlt criticality [ACT ...] [-a ACT] [--latex | --json]   critical (C_b, C_W, K*) and universality class
    pdlt flow -a ACT -w 3,64,64,1 --C-W 1 --C-b 0 -x INPUTS [--json]   K^(l) per layer
    pdlt table [--out FILE.tex] [--pdf]               LaTeX document: criticality table + recursions
    pdlt sample -a ACT -w 3,64,64 --C-W 1 --C-b 0 -x INPUTS --samples N [--seed S] [--method markov|weights]
                [--out run.npz] [--checkpoint ck.npz] [--checkpoint-every SECONDS] [--json]
                                                      Monte Carlo estimates with standard errors
    pdlt bench theory                                 timing of the leading-order pipeline
    pdlt bench mc [--n 512 --L 8 --d 4] [--quick] [--full] [--json-out NEW.json] [--compare OLD.json]
                                                      Monte Carlo throughput: rates of the four kinds of ensembles,
                                                      ratios to raw normals, device scaling, cost exponents, V^(L)
    pdlt bench ntk [--d 4 --L 50]                     NTK statistics: theory timings, Monte Carlo cost ratio
    pdlt bench train [--L 10 --networks 10000]        trained ensembles: theory and Monte Carlo against targets
    pdlt bench nnlo                                   beyond O(1/n): nnlo (L = 1000; d = 4, L = 50), all_orders (L = 200)

``ACT`` is a registered name (``tanh``, ``leaky_relu(0.1)``, ...) or a sympy expression in ``z``
(``'tanh(z)+0.1*z'``). ``INPUTS`` is a ``.npy`` file of shape ``(d, n_0)``, a literal ``'[[1,0],[0,1]]'`` or rows
separated by semicolons ``'1,0;0,1'``.

Exit codes: 0 success; 1 ``verify`` found failed checks, or an internal error; 2 bad input (every error is one
line ``pdlt CMD: error: ...`` on stderr that names the option to change); 130 interrupted by SIGINT (Ctrl-C),
143 by SIGTERM. JSON output is strict (RFC 8259): a value that is not a finite number is written as ``null`` and
the reason is given next to it.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import signal
import sys
import tempfile
import time

import numpy as np

__all__ = ["main", "build_parser"]

# exit status of a process killed by signal s, as shells report it (128 + s)
EXIT_BAD_INPUT = 2
EXIT_SIGNAL = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


# ---------------------------------------------------------------------------------------------------
# errors and argument types
# ---------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pdlt CMD: error: MESSAGE (see pdlt CMD --help)``, exit 2.

    argparse's own ``error`` prints the usage block first; a one-line error is easier to read in a log and to
    grep, and ``--help`` still gives the usage.
    """

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _positive_int(option: str, minimum: int = 1):
    def conv(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    conv.__name__ = option
    return conv


def _real(option: str, minimum: float | None = None, open_minimum: bool = False):
    def conv(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if minimum is not None and (v < minimum or (open_minimum and v == minimum)):
            raise argparse.ArgumentTypeError(f"must be {'>' if open_minimum else '>='} {minimum:g}, got {v:g}")
        return v

    conv.__name__ = option
    return conv


def _seed(text: str) -> int:
    try:
        v = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {v}")
    return v


def _floats(text: str):
    """``--C-W`` / ``--C-b``: a scalar or one comma-separated value per layer (finite, >= 0: variances)."""
    vals = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        try:
            v = float(tok)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{tok} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError(f"{tok} is not a variance (must be finite and >= 0)")
        vals.append(v)
    if not vals:
        raise argparse.ArgumentTypeError("give a number or one comma-separated number per layer")
    return vals[0] if len(vals) == 1 else vals


def _reals(text: str):
    """``--gamma`` / ``--xi``: a scalar or one comma-separated finite real per layer (may be negative)."""
    vals = []
    for tok in (t.strip() for t in text.split(",")):
        try:
            v = float(tok)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{tok!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{tok} is not finite")
        vals.append(v)
    return vals[0] if len(vals) == 1 else vals


def _widths(text: str) -> list[int]:
    """``-w n_0,n_1,...,n_L``: integers >= 1, at least two of them."""
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        try:
            out.append(int(tok))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{tok} is not an integer width") from None
        if out[-1] < 1:
            raise argparse.ArgumentTypeError(f"{tok} is not a width (must be >= 1)")
    if len(out) < 2:
        raise argparse.ArgumentTypeError(f"give n_0,n_1,...,n_L (the input dimension and at least one layer), got {text!r}")
    return out


def _activation(text: str):
    """``-a``: a registered name (``tanh``, ``leaky_relu(0.1)``) or a sympy expression in ``z``, through
    :func:`pdlt.activation` (safe parsing and the activation's own validation: a typo such as ``tahn(z)`` or a
    function that is not real on all of R such as ``sqrt(z)`` is refused here, not as NaN kernels later)."""
    from .activations import activation
    from .errors import ActivationError

    try:
        return activation(text)
    except ActivationError as err:
        raise argparse.ArgumentTypeError(_one_line(err)) from None


def _inputs_text(text: str) -> np.ndarray:
    """``-x``: a ``.npy`` file, a Python literal ``[[...],[...]]``, or rows ``'1,0;0,1'``; finite reals."""
    if text.endswith(".npy"):
        try:
            arr = np.load(text, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:          # (EOFError: an empty file)
            raise argparse.ArgumentTypeError(f"cannot read inputs file {text!r}: {_one_line(err) or 'it is empty'}"
                                             ) from None
    else:
        try:
            if ";" in text:
                rows = [ast.literal_eval("[" + r + "]") for r in text.split(";")]
                lens = sorted({len(r) for r in rows})
                if len(lens) > 1:
                    raise argparse.ArgumentTypeError(f"rows of {text!r} have different lengths {lens}; every row is "
                                                     "one input of dimension n_0")
                val = rows
            else:
                val = ast.literal_eval(text)
            arr = np.asarray(val)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise argparse.ArgumentTypeError(f"must be a .npy file, a numeric literal like '[[1,0],[0,1]]' or rows "
                                             f"like '1,0;0,1' (no nan/inf), got {text!r}") from None
    if arr.dtype.kind not in "biuf" or arr.dtype.kind == "b":
        raise argparse.ArgumentTypeError(f"must contain real numbers, got {text!r} (dtype {arr.dtype})")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise argparse.ArgumentTypeError(f"must have shape (d, n_0) = (inputs, input dimension), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise argparse.ArgumentTypeError(f"contains nan or inf: {text!r}")
    return arr


def _check_writable_dir(path: str, option: str, create: bool = True) -> None:
    """Make sure a file can be written in the folder ``path`` (created first if ``create``), before any long
    computation, so that a bad ``--out`` fails in a second rather than after the work."""
    from .errors import ParameterError

    if not create and not os.path.isdir(path):
        raise ParameterError(f"{option}: the folder {path!r} does not exist; create it or choose another", option)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".pdlt-write-test-"):
            pass
    except OSError as err:
        raise ParameterError(f"{option}: cannot write to {path!r} ({err.strerror or err}); choose another "
                             "folder", option) from None


def _network(args):
    """MLP and inputs from the shared network options; errors name the option."""
    from .architecture import MLP
    from .errors import ParameterError

    try:
        net = MLP(args.activation, args.widths, args.C_W, args.C_b, gamma=getattr(args, "gamma", 0.0),
                  xi=getattr(args, "xi", 1.0))
    except ValueError as err:
        raise ParameterError(f"-w/--widths, --C-W, --C-b, --gamma, --xi: {_one_line(err)}", "--widths") from None
    try:
        x = net.inputs(args.inputs)
    except ValueError as err:
        raise ParameterError(f"-x/--inputs: {_one_line(err)} (here n_0 = {net.widths[0]} from -w)",
                             "--inputs") from None
    return net, x


# ---------------------------------------------------------------------------------------------------
# strict JSON
# ---------------------------------------------------------------------------------------------------


def _finite_or_none(obj, where: str, nulls: dict, reason: str = "not a finite number"):
    """``obj`` with every non-finite float replaced by None; each replacement's path goes into ``nulls``."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v, f"{where}.{k}" if where else str(k), nulls, reason) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v, f"{where}[{i}]", nulls, reason) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _finite_or_none(obj.tolist(), where, nulls, reason)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if not math.isfinite(f):
            nulls[where] = f"{reason} ({f})"
            return None
        return f
    return obj


def _dumps(obj, indent=2) -> str:
    """Strict JSON (no NaN/Infinity tokens): non-finite numbers become null, listed under ``"nulls"``."""
    nulls: dict = {}
    clean = _finite_or_none(obj, "", nulls)
    if nulls:
        if isinstance(clean, dict):
            clean = {**clean, "nulls": {**clean.get("nulls", {}), **nulls}}
        else:
            clean = {"data": clean, "nulls": nulls}
    return json.dumps(clean, indent=indent, allow_nan=False)


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------


def _default_activations():
    from .activations import available_activations

    return [n for n in available_activations() if n not in ("silu", "leaky_relu")] + ["leaky_relu(0.1)"]


def _cmd_criticality(args) -> int:
    from .theory.criticality import criticality

    acts = (args.activations or []) + (args.more or []) or _default_activations()
    res = [criticality(a) for a in acts]
    if args.json:
        print(_dumps([r.as_dict() for r in res]))
    elif args.latex:
        from .latex import criticality_table

        print(criticality_table(res))
    else:
        head = ("activation", "class", "C_b", "C_W", "K*", "p_par", "p_perp", "note")

        def f(v):
            return "-" if v is None else f"{v:.9g}"

        body = []
        for r in res:
            ex = r.exponents or {}
            kstar = "any" if r.universality == "scale-invariant" else f(r.K_star)
            body.append((r.activation, r.universality, f(r.C_b), f(r.C_W), kstar, f(ex.get("p_par")),
                         f(ex.get("p_perp")), r.note))
        _print_table(head, body)
    return 0


def _print_table(head, body):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for b in body:
        print(fmt.format(*b))


def _cmd_flow(args) -> int:
    from .theory.kernel import kernel_flow

    net, x = _network(args)
    flow = kernel_flow(net, x)
    if args.json:
        print(_dumps({"activation": net.activation.name, "widths": list(net.widths), "C_W": list(net.C_W),
                      "C_b": list(net.C_b), "gamma": list(net.gamma), "xi": list(net.xi), "x": x, "K": flow.K}))
        return 0
    np.set_printoptions(precision=10, suppress=False, linewidth=120)
    print(f"# {net.activation.name}, widths={net.widths}, C_W={net.C_W[0]:g}{'..' if len(set(net.C_W)) > 1 else ''}, "
          f"C_b={net.C_b[0]:g}{'..' if len(set(net.C_b)) > 1 else ''}, d={flow.d}"
          + (f", gamma={net.gamma[1:]}, xi={net.xi[1:]} (layers 2..L)" if net.residual else ""))
    for l in range(1, net.L + 1):
        K = flow[l]
        if flow.d == 1:
            print(f"l={l:4d}  K={K[0, 0]:.12g}")
        else:
            print(f"l={l:4d}  K=\n{K}")
    return 0


def _cmd_verify(args) -> int:
    from .verify import run_verify

    out = None if args.out == "-" else args.out
    if out is not None:
        _check_writable_dir(out, "--out")
    rows, summary = run_verify(out, quick=args.quick, compile_tex=not args.no_pdf, monte_carlo=not args.no_mc,
                               processes=args.processes)
    return 0 if summary["failed"] == 0 else 1


def _cmd_table(args) -> int:
    from .errors import ParameterError
    from .latex import compile_pdf, criticality_table, document, have_pdflatex, recursion_equations
    from .theory.criticality import criticality

    if args.pdf and not args.out:
        raise ParameterError("--pdf needs --out FILE.tex (the PDF is written next to it)", "--pdf")
    if args.pdf and not have_pdflatex():
        raise ParameterError("--pdf: pdflatex is not installed (Debian: apt-get install texlive-latex-recommended); "
                             "drop --pdf to write the .tex only", "--pdf")
    if args.out:
        _check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out", create=False)
    parts = [criticality_table([criticality(n) for n in _default_activations()]),
             r"\section*{Leading-order recursions}"]
    for n in ("linear", "relu", "erf", "sin", "tanh"):
        parts.append(r"\paragraph{%s}" % n + "\n" + recursion_equations(n))
    tex = document(*parts, title="pdlt: criticality of registered activations")
    if not args.out:
        print(tex)
        return 0
    with open(args.out, "w") as fh:
        fh.write(tex)
    print(f"wrote {args.out}")
    if args.pdf:
        out = os.path.dirname(os.path.abspath(args.out))
        name = os.path.splitext(os.path.basename(args.out))[0]
        try:
            pdf = compile_pdf(tex, out, name)
        except RuntimeError as err:
            raise ParameterError(f"--pdf: {_one_line(err)}", "--pdf") from None
        print(f"wrote {pdf}")
    return 0


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_theory(d: int = 4, L: int = 50, repeats: int = 3, progress=None) -> dict:
    """Time the leading-order flow + criticality analysis for d inputs and L layers (tanh and gelu at their
    critical points, relu; criticality caches cleared each repeat, JAX already warm), and the finite-width
    K, G1, V for (d, L) and (1, 1000). Returns seconds (best of repeats) per case, and 2D quadrature
    throughput. ``progress(name, value)`` is called after each measurement."""
    import warnings

    from .architecture import MLP
    from .errors import TruncationWarning
    from .gaussian import bench_expect
    from .theory import criticality as crit_mod
    from .theory.kernel import kernel_flow

    report = progress or (lambda name, value: None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(d, 8))
    out = {}
    for name in ("tanh", "relu", "gelu"):
        best = np.inf
        for _ in range(repeats):
            crit_mod.criticality_cached.cache_clear()
            crit_mod.analytic_class.cache_clear()
            t0 = time.perf_counter()
            c = crit_mod.criticality(name)
            net = MLP(name, (8,) + (64,) * L, C_W=c.C_W, C_b=c.C_b)
            kernel_flow(net, x)
            crit_mod.correlation_length(name, 0.9 * c.C_W, c.C_b + 0.05)
            best = min(best, time.perf_counter() - t0)
        key = f"{name}: criticality + flow (d={d}, L={L}) [s]"
        out[key] = best
        report(key, best)
    from .theory.finite_width import finite_width

    for name in ("tanh", "relu", "gelu"):
        c = crit_mod.criticality(name)
        for dd, LL in ((d, L), (1, 1000)):
            net = MLP(name, (8,) + (64,) * LL, C_W=c.C_W, C_b=c.C_b)
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                with warnings.catch_warnings():  # timing only: L/n = 16 is far outside perturbation theory
                    warnings.simplefilter("ignore", TruncationWarning)
                    finite_width(net, x[:dd])
                best = min(best, time.perf_counter() - t0)
            key = f"{name}: K, G1, V (d={dd}, L={LL}) [s]"
            out[key] = best
            report(key, best)
    for k, v in bench_expect(n_kernels=10_000).items():
        out[f"gaussian.expect {k} [1/s]"] = v
        report(f"gaussian.expect {k} [1/s]", v)
    return out


def bench_ntk_theory(d: int = 4, L: int = 50, repeats: int = 2, progress=None) -> dict:
    """Seconds (best of ``repeats``) for every O(1/n) NTK statistic (Theta, Theta1, A, B, D, F, P, Q, R, S, T, U) of
    a critical network with d inputs and L layers, for tanh, relu and gelu (issue target: < 5 s each for d = 4,
    L = 50 on 2 cores)."""
    import warnings

    from .architecture import MLP
    from .errors import TruncationWarning
    from .theory.criticality import criticality
    from .theory.ntk_statistics import ntk_statistics

    report = progress or (lambda name, value: None)
    x = np.random.default_rng(0).normal(size=(d, 8))
    out = {}
    for name in ("tanh", "relu", "gelu"):
        c = criticality(name)
        net = MLP(name, (8,) + (64,) * L, C_W=c.C_W, C_b=c.C_b)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            with warnings.catch_warnings():  # timing only
                warnings.simplefilter("ignore", TruncationWarning)
                ntk_statistics(net, x, 1.0, 1.0)
            best = min(best, time.perf_counter() - t0)
        key = f"{name}: NTK statistics Theta..U (d={d}, L={L}) [s]"
        out[key] = best
        report(key, best)
    # residual networks with shortcuts (gamma^2 = 1/2 at criticality): the trajectory theory's two-layer averages grow
    # like L^2 and are four-dimensional with two inputs, so those run at one input and depth L, two inputs and depth
    # min(L, 10) (once: seconds to tens of seconds)
    from .theory.residual import residual_criticality

    for name, dd, LL in (("tanh", 1, L), ("relu", 1, L), ("gelu", 1, L), ("tanh", 2, min(L, 10))):
        c = residual_criticality(name, gamma=0.5 ** 0.5)
        net = MLP(name, (8,) + (64,) * LL, C_W=c.C_W, C_b=c.C_b, gamma=0.5 ** 0.5)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            ntk_statistics(net, x[:dd], 1.0, 1.0)
        key = f"{name}: residual NTK statistics (gamma^2 = 1/2, d={dd}, L={LL}) [s]"
        out[key] = time.perf_counter() - t0
        report(key, out[key])
    return out


def bench_train_theory(n_train: int = 8, n_test: int = 8, L: int = 10, repeats: int = 2, progress=None) -> dict:
    """Seconds (best of ``repeats``) of :func:`pdlt.train_prediction` for ``n_train`` training and ``n_test`` test
    inputs of a critical tanh network of depth L: the infinite-width ensemble (mean and covariance) and the O(1/n)
    mean (at most 8 training inputs). The issue's target: 8 + 8 inputs at L = 10 in under 10 s on 2 cores; reported
    as ratios to it (the O(1/n) mean is timed once: it takes about 9 s)."""
    import warnings

    from .architecture import MLP
    from .errors import TruncationWarning
    from .theory.training import stability_limit, train_prediction

    report = progress or (lambda name, value: None)
    rng = np.random.default_rng(0)
    net = MLP("tanh", (4,) + (64,) * (L - 1) + (1,), C_W=1.0, C_b=0.0)
    out = {}
    for what, nA in (("infinite width", n_train), ("O(1/n) mean", min(n_train, 8))):
        xa, xd, y = rng.normal(size=(nA, 4)), rng.normal(size=(n_test, 4)), rng.normal(size=nA)
        best = np.inf
        for _ in range(repeats if what == "infinite width" else 1):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                tp = train_prediction(net, xa, y, xd, eta=0.5 * stability_limit(net, xa))
                if what != "infinite width":
                    tp.mean_correction
            best = min(best, time.perf_counter() - t0)
        key = f"train_prediction {what} ({nA} train + {n_test} test inputs, L={L}) [s]"
        out[key] = best
        out[f"ratio {what} / 10 s target"] = best / 10.0
        report(key, best)
    return out


def bench_nnlo_theory(repeats: int = 2, progress=None) -> dict:
    """Seconds (best of ``repeats``) of the theory beyond O(1/n) for critical tanh, ReLU and GELU at width 64:
    :func:`pdlt.nnlo` at L = 1000 (target 1 s) and :func:`pdlt.all_orders` (M = 8) at L = 200 (target 2 s) for one
    input, and :func:`pdlt.nnlo` for d = 4 inputs at L = 50 (target 10 s, one run; ReLU also at L = 8, before its
    inputs align), each with its ratio to the target; the same two targets for a deep linear network with shortcuts
    (gamma^2 = 1/2), and the one-input target for critical tanh and ReLU with shortcuts (gamma^2 = 1/2, one run), and
    for the NTK of one input at O(1/n^2) (:func:`pdlt.ntk_nnlo`, critical tanh, one run), and the cost of its dNTK
    (four copies against three, L = 50). Each first call builds the activation's forms (sympy), which is not timed."""
    import warnings

    from .architecture import MLP
    from .errors import PdltWarning, TruncationWarning
    from .theory.criticality import criticality
    from .theory.metric_closure import all_orders
    from .theory.nnlo import nnlo

    report = progress or (lambda name, value: None)
    out = {}
    for name in ("tanh", "relu", "gelu"):
        crit = criticality(name)
        for what, fn, L, target in (("nnlo O(1/n^2)", nnlo, 1000, 1.0), ("all_orders (M=8)", all_orders, 200, 2.0)):
            net = MLP(name, (1,) + (64,) * L, C_W=crit.C_W, C_b=crit.C_b)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                fn(MLP(name, (1, 64, 64), C_W=crit.C_W, C_b=crit.C_b), [1.0])
                best = np.inf
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(net, [1.0])
                    best = min(best, time.perf_counter() - t0)
            key = f"{name}: {what}, one input, L={L} [s]"
            out[key] = best
            out[f"{name}: ratio {what} / {target:g} s target"] = best / target
            report(key, best)
        # several inputs: d = 4 at L = 50 (target 10 s), once (its first call builds the forms: a warm-up at L = 3).
        # ReLU drives these inputs toward alignment (smallest correlation eigenvalue 0.5 at layer 1, 0.05 at layer 20,
        # 0.012 at layer 50); its averages over three and four inputs are exact orthant moments, whose cost does not
        # grow with the alignment (the quadrature used before did; its first 8 layers took 1.03 s, and are still timed)
        x4 = np.eye(4) + 0.3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            nnlo(MLP(name, (4, 64, 64, 64), C_W=crit.C_W, C_b=crit.C_b), x4)
            for L4 in ((8, 50) if name == "relu" else (50,)):
                t0 = time.perf_counter()
                nnlo(MLP(name, (4,) + (64,) * L4, C_W=crit.C_W, C_b=crit.C_b), x4)
                best = time.perf_counter() - t0
                if L4 != 50:
                    key = f"{name}: nnlo O(1/n^2), d=4 inputs, L={L4} [s]"
                    out[key] = best
                    report(key, best)
        key = f"{name}: nnlo O(1/n^2), d=4 inputs, L=50 [s]"
        out[key] = best
        out[f"{name}: ratio nnlo O(1/n^2) d=4 / 10 s target"] = best / 10.0
        report(key, best)
    # residual steps: deep linear networks with shortcuts at criticality (gamma^2 = 1/2), the tuple chain's series
    g = 0.5**0.5
    for d, L, target in ((1, 1000, 1.0), (4, 50, 10.0)):
        x = np.eye(4)[:d] + 0.3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                nnlo(MLP("linear", (4,) + (64,) * L, C_W=1.0, gamma=g, xi=g), x)
                best = min(best, time.perf_counter() - t0)
        key = f"linear with shortcuts: nnlo O(1/n^2), d={d}, L={L} [s]"
        out[key] = best
        out[f"linear with shortcuts: ratio nnlo O(1/n^2) d={d} / {target:g} s target"] = best / target
        report(key, best)
    # nonlinear residual networks (critical, gamma^2 = 1/2): the cumulant chain of the layer's empirical measure, one
    # input, against the one-input target; it runs four mode counts of O(N^4) per layer where the metric chain's
    # step is a few flops
    from .theory.residual import residual_criticality

    for name in ("tanh", "relu"):
        crit = residual_criticality(name, gamma=g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PdltWarning)
            nnlo(MLP(name, (1, 64, 64), C_W=crit.C_W, C_b=crit.C_b, gamma=g), [1.0])
            t0 = time.perf_counter()
            nnlo(MLP(name, (1,) + (64,) * 1000, C_W=crit.C_W, C_b=crit.C_b, gamma=g), [1.0])
            best = time.perf_counter() - t0
        key = f"{name} with shortcuts (gamma^2 = 1/2): nnlo O(1/n^2), one input, L=1000 [s]"
        out[key] = best
        out[f"{name} with shortcuts: ratio nnlo O(1/n^2) one input / 1 s target"] = best
        report(key, best)
    # the NTK of one input at O(1/n^2): the chain of three copies of the network on power series in h
    from .theory.ntk_nnlo import ntk_nnlo

    crit = criticality("tanh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)
        ntk_nnlo(MLP("tanh", (1, 64, 64), C_W=crit.C_W, C_b=crit.C_b), [1.0])
        t0 = time.perf_counter()
        ntk_nnlo(MLP("tanh", (1,) + (64,) * 1000, C_W=crit.C_W, C_b=crit.C_b), [1.0], lambda_b=0.0)
        best = time.perf_counter() - t0
    key = "tanh: ntk_nnlo (NTK O(1/n^2)), one input, L=1000 [s]"
    out[key] = best
    out["tanh: ratio ntk_nnlo one input / 1 s target"] = best
    report(key, best)
    # the dNTK at O(1/n^2): four copies instead of three, at L = 50 (after a warm-up that builds the four copies' forms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)
        ntk_nnlo(MLP("tanh", (1, 64, 64), C_W=crit.C_W, C_b=crit.C_b), [1.0], dntk=True)
        net = MLP("tanh", (1,) + (64,) * 50, C_W=crit.C_W, C_b=crit.C_b)
        times = []
        for dntk in (False, True):
            t0 = time.perf_counter()
            ntk_nnlo(net, [1.0], lambda_b=0.0, dntk=dntk)
            times.append(time.perf_counter() - t0)
    key = "tanh: ntk_nnlo with the dNTK (four copies), one input, L=50 [s]"
    out[key] = times[1]
    out["tanh: ratio ntk_nnlo four copies / three copies, L=50"] = times[1] / times[0]
    report(key, times[1])
    return out


def _bench_progress(name, value) -> None:
    _stderr_line(f"[pdlt bench] {name}: {value if isinstance(value, str) else format(value, '.4g')}")


def _cmd_bench(args) -> int:
    from .errors import ParameterError
    from .montecarlo import bench as mcbench

    # a bad --compare or --json-out fails here, in a second, not after minutes of measurements
    old = mcbench.load_bench_json(args.compare, "--compare", args.what) if args.compare else None
    if args.json_out:
        _check_writable_dir(os.path.dirname(os.path.abspath(args.json_out)), "--json-out", create=False)
        if os.path.isdir(args.json_out):
            raise ParameterError(f"--json-out {args.json_out!r} is a folder; name a file in it (e.g. bench.json)",
                                 "--json-out")
    L = args.L if args.L is not None else (10 if args.what == "train" else 8 if args.what == "mc" else 50)
    d = args.d if args.d is not None else 4
    width, params = 85, {}
    if args.what == "nnlo":
        res = bench_nnlo_theory(progress=_bench_progress)
    elif args.what == "train":
        params = {"L": L, "networks": args.networks}
        res = bench_train_theory(L=L, progress=_bench_progress)
        res.update(mcbench.bench_train(n_networks=args.networks, progress=_bench_progress))
    elif args.what == "ntk":
        params = {"d": d, "L": L}
        res = bench_ntk_theory(d=d, L=L, progress=_bench_progress)
        res.update(mcbench.bench_ntk(progress=_bench_progress))
    elif args.what == "mc":
        quick = {"quick": True} if args.quick else {}    # only when asked: the call stays the one it always was
        min_time = args.min_time
        if min_time is None:
            min_time = mcbench.QUICK_MIN_TIME if args.quick else mcbench.MIN_TIME
        params = {"n": args.n, "L": L, "d": d, "min_time": min_time, "quick": args.quick, "full": args.full,
                  "vertex": not args.no_vertex}
        res = mcbench.bench_mc(n=args.n, L=L, d=d, min_time=min_time, full=args.full, vertex=not args.no_vertex,
                               progress=_bench_progress, **quick)
    else:
        width, params = 60, {"d": d, "L": L}
        res = bench_theory(d=d, L=L, progress=_bench_progress)
    for k, v in res.items():
        print(f"{k:{width}s} {v}" if isinstance(v, str) else f"{k:{width}s} {v:12.4g}")
    if args.json_out:
        rec = mcbench.bench_record(args.what, res, params, ["pdlt"] + list(getattr(args, "_argv", [])))
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(_dumps(rec) + "\n")
        _stderr_line(f"[pdlt bench] wrote {args.json_out}")
    if old is not None:
        rows = mcbench.compare_results(res, old["results"])
        print(f"\n# against {args.compare} ({old.get('benchmark')}, {old.get('date')}, device "
              f"{old.get('device')}): new/old for the {len(rows)} numbers in both; rates below "
              f"{mcbench.SLOWER:g} x old (times above old / {mcbench.SLOWER:g}) are marked SLOWER")
        was = old.get("parameters") if isinstance(old.get("parameters"), dict) else {}
        differ = [f"{k} {was.get(k)!r} -> {v!r}" for k, v in params.items() if k in was and was[k] != v]
        if differ:
            print(f"# parameters differ ({', '.join(differ)}): only the numbers measured alike are compared")
        for r in rows:
            mark = "  SLOWER" if r["slower"] else ""
            print(f"{r['key']:{width}s} {r['new']:12.4g} {r['old']:12.4g} {r['ratio']:8.3f}{mark}")
        slower = sum(r["slower"] for r in rows)
        if slower:
            _stderr_line(f"[pdlt bench] {slower} of {len(rows)} compared numbers are more than "
                         f"{1 - mcbench.SLOWER:.0%} slower than in {args.compare}")
    return 0


# --- sample ------------------------------------------------------------------------------------------


def _undefined_layers(res) -> list[int]:
    """Layers l (1..L) whose distinct-neuron four-point function is undefined: width n_l = 1 has no pair i != j.

    Uses ``MCResult.undefined`` when the runner provides it (a mapping name -> layers, or a collection of layers),
    else the widths: the definition, not the NaN the estimator happens to return, decides.
    """
    layers = {l for l in range(1, len(res.widths)) if res.widths[l] == 1}
    und = getattr(res, "undefined", None)
    if isinstance(und, dict):
        und = und.get("four_point", ())
    try:
        layers |= {int(l) for l in (und or ())}
    except (TypeError, ValueError):
        pass
    return sorted(layers)


_UNDEFINED = "undefined (width-1 layer)"


def _sample_text(res, undefined: list[int]) -> str:
    """The CLI's table: layer, ``E[z_0 z_0]`` and ``V_(00)(00)`` with standard errors; width-1 layers say so."""
    cfg = res.config
    rows = [f"# {cfg['activation']}, widths={tuple(res.widths)}, method={cfg['method']}, seed={cfg['seed']}, "
            f"networks={res.n_samples}{'' if res.complete else ' of ' + str(cfg['n_samples']) + ' (INCOMPLETE)'}",
            f"{'l':>4}  {'E[z_0 z_0]':>24}  {'V_(00)(00) = n_(l-1) x four_point':>36}"]
    for l in range(1, res.L + 1):
        g, gs = res.two_point.mean[l - 1, 0, 0], res.two_point.stderr[l - 1, 0, 0]
        if l in undefined:
            vtxt = f"{_UNDEFINED:>36}"
        else:
            v, vs = res.vertex.mean[l - 1, 0, 0, 0, 0], res.vertex.stderr[l - 1, 0, 0, 0, 0]
            vtxt = f"{v:25.6g} +- {vs:8.2g}"
        rows.append(f"{l:4d}  {g:13.6g} +- {gs:8.2g}  {vtxt}")
    if undefined:
        rows.append(f"# layer(s) {', '.join(map(str, undefined))} have width 1: the distinct-neuron four-point "
                    "function needs two neurons i != j")
    return "\n".join(rows)


def _versions() -> dict:
    from importlib import metadata

    from . import __version__

    out = {"pdlt": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    for pkg in ("jax", "jaxlib", "sympy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _sample_record(res, undefined: list[int], argv: list[str], signal_name) -> dict:
    """Everything needed to reproduce and judge the run (item 14): the full configuration (x included), counts,
    completeness, versions, the command line, and the estimates with width-1 layers written as null."""
    cfg = dict(res.config)
    rec = {
        "command": ["pdlt"] + list(argv),
        "versions": _versions(),
        "config": cfg,
        "x": cfg.get("x"),
        "widths": list(res.widths),
        "activation": cfg.get("activation"),
        "activation_expr": cfg.get("activation_expr"),
        "C_W": cfg.get("C_W"), "C_b": cfg.get("C_b"), "gamma": cfg.get("gamma"), "xi": cfg.get("xi"),
        "seed": cfg.get("seed"), "method": cfg.get("method"),
        "batches": cfg.get("batches"),
        "n_samples": res.n_samples, "n_samples_requested": cfg.get("n_samples"), "complete": bool(res.complete),
        "interrupted": signal_name, "elapsed_s": res.elapsed,
        "caveats": [c.as_dict() for c in getattr(res, "caveats", ())],
    }
    from .observables import OBSERVABLES, names

    res_undefined = getattr(res, "undefined", {}) if isinstance(getattr(res, "undefined", None), dict) else {}
    for name in names("raw", "derived"):
        est = getattr(res, name)
        entry = {}
        distinct = OBSERVABLES[name].undefined_when == "width1"  # needs two neurons i != j
        other = [] if distinct else sorted(res_undefined.get(name, ()))   # e.g. residual runs' six-point function
        for part in ("mean", "stderr"):
            arr = np.array(getattr(est, part), dtype=np.float64)
            if distinct:
                for l in undefined:
                    arr[l - 1] = np.nan
            entry[part] = arr
        if other:
            reason = res.undefined_reason(name)
            entry = _finite_or_none(entry, "", {}, reason=reason)
            entry["undefined_layers"] = other
            entry["undefined_reason"] = reason + "; its entries are null"
        elif distinct and undefined:
            nulls: dict = {}
            entry = _finite_or_none(entry, "", nulls, reason=_UNDEFINED)
            entry["undefined_layers"] = undefined
            entry["undefined_reason"] = ("width-1 layer: the distinct-neuron four-point function needs two neurons "
                                         "i != j; its entries are null")
        rec[name] = entry
    return rec


def _call_sample(sample, net, x, args, kw):
    if args.checkpoint_every is not None:
        kw["checkpoint_every"] = args.checkpoint_every
    # the runner's own interruption line names the Python call; the CLI prints one line of its own instead
    # --memory-budget auto parses to None, so kw holds no budget then
    return sample(net, x, args.samples, args.seed, method=args.method, batches=args.batches,
                  chunk_size=args.chunk_size, checkpoint=args.checkpoint, dtype=args.dtype,
                  progress=False if args.json else None, resume_hint=False, **{"memory_budget": "auto", **kw})


def _part(text: str):
    """``I/K`` -> ``(I, K)``, 0 <= I < K."""
    try:
        i, k = (int(t) for t in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part must be I/K (part I = 0..K-1 of K), got {text!r}") from None
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"--part I/K needs 0 <= I < K, got {text!r}")
    return i, k


def _cmd_merge(args) -> int:
    from .errors import ParameterError
    from .montecarlo.runner import MCResult, check_output_path, merge, npz_path

    out = check_output_path(args.out, "out")
    for part in args.parts:
        # (the merged run would replace that part: its networks lost, and a later merge of the parts refused)
        p = npz_path(os.fsdecode(part))
        if os.path.exists(out) and os.path.exists(p) and os.path.samefile(p, out):
            raise ParameterError(f"out {out} is one of the parts being merged; write the merged run to a new file",
                                 "out")
    res = merge(args.parts)
    path = res.save(args.out)
    if args.json:
        print(_dumps({"out": path, "n_samples": res.n_samples, "complete": res.complete,
                      "merged_from": res.info.get("merged_from")}, indent=1))
    else:
        print(f"wrote {path} and {path[:-4]}.json: {res.n_samples:,} of {int(res.config['n_samples']):,} networks"
              + ("" if res.complete else " (incomplete: resume it with pdlt sample --checkpoint on a copy)"))
        if isinstance(res, MCResult):       # a training run's parts have no per-layer table
            print(_sample_text(res, _undefined_layers(res)))
    return 0


def _cmd_sample(args) -> int:
    from .errors import ParameterError

    if not args.distributed:
        if any(v is not None for v in (args.coordinator, args.num_processes, args.process_id)):
            raise ParameterError("--coordinator, --num-processes and --process-id need --distributed", "--distributed")
        return _sample_command(args)
    from .errors import DistributedError
    from .montecarlo.distributed import initialize

    try:
        group = initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
        _agreed_paths(args, group)
        if group.rank != 0:
            args.out, args.quiet = None, True
        code = _sample_command(args)
    except Exception as err:
        # JAX's runtime aborts (with a C++ stack trace) a process that shuts down after a peer failed: say what
        # happened in one line and leave now, with the exit status main() would give
        if isinstance(err, MemoryError):
            line, code = "error: out of memory; lower --memory-budget or --chunk-size, or the widths", EXIT_BAD_INPUT
        elif isinstance(err, (ValueError, OSError)):
            line, code = f"error: {_one_line(err)}", 1 if isinstance(err, DistributedError) else EXIT_BAD_INPUT
        else:
            line, code = f"internal error: {type(err).__name__}: {_one_line(err)} (please report it)", 1
        _stderr_line(f"pdlt sample: {line}")
        sys.stdout.flush()
        os._exit(code)
    return code


def _agreed_paths(args, group) -> None:
    """Process 0 checks ``--out`` and ``--checkpoint`` (it alone writes them; other hosts may lack the folders) and
    tells the others, so that a bad path stops every process with one line instead of leaving them waiting."""
    from .montecarlo.runner import check_output_path

    def check():
        for option, path in (("--out", args.out), ("--checkpoint", args.checkpoint)):
            if path and group.rank == 0:
                check_output_path(path, option)

    group.together(check, "the checks of --out and --checkpoint", "refused --out or --checkpoint (see its error)")


def _sample_command(args) -> int:
    from dataclasses import replace

    from .montecarlo.runner import check_output_path, sample

    net, x = _network(args)
    kw = {}
    if args.memory_budget is not None:
        kw["memory_budget"] = int(args.memory_budget * 2**20)
        if kw["memory_budget"] < 1:        # (the library would name the rounded 0 bytes, not what was typed)
            from .errors import ParameterError
            raise ParameterError(f"--memory-budget {args.memory_budget:g} MiB is less than one byte; give the working "
                                 "memory per device in MiB (default 512)", "--memory-budget")
    if args.out:
        check_output_path(args.out, "--out")  # never creates a directory: a typo must not make a tree
    if args.checkpoint and not getattr(args, "quiet", False):   # process 0 alone writes it (other hosts may lack it)
        path = check_output_path(args.checkpoint, "--checkpoint")
        if path != args.checkpoint:
            _stderr_line(f"pdlt sample: checkpoint file: {path}")
    if args.part is not None:
        kw["part"] = args.part
    res = _call_sample(sample, net, x, args, {**kw, "distributed": args.distributed})
    if getattr(args, "quiet", False):    # processes other than 0 of a distributed run: process 0 reports
        return 0 if res.complete else EXIT_SIGNAL.get(res.interrupted or "SIGINT", EXIT_SIGNAL["SIGINT"])
    signal_name = None
    if not res.complete:
        signal_name = getattr(res, "interrupted", None) or "SIGINT"
    undefined = _undefined_layers(res)
    argv = args._argv
    if args.out:
        info = {**dict(res.info), "command": ["pdlt"] + list(argv)}
        path = replace(res, info=info).save(args.out)
        if not args.json:
            print(f"wrote {path} and {path[:-4]}.json")
    if args.json:
        print(_dumps(_sample_record(res, undefined, argv, signal_name), indent=1))
    else:
        print(_sample_text(res, undefined))
    if signal_name is None:
        return 0
    _stderr_line(f"pdlt sample: {_interrupt_advice(args, res.n_samples)}")
    return EXIT_SIGNAL.get(signal_name, EXIT_SIGNAL["SIGINT"])


def _interrupt_advice(args, done) -> str:
    from .montecarlo.runner import npz_path

    head = f"interrupted after {done} of {args.samples} networks; "
    if args.checkpoint:
        if done > 0 and os.path.exists(npz_path(args.checkpoint)):
            return head + f"checkpoint saved to {npz_path(args.checkpoint)}; rerun the same command to resume"
        return head + "nothing to checkpoint yet; rerun the same command to start again"
    return head + "no checkpoint: rerun with --checkpoint PATH to make runs resumable"


# ---------------------------------------------------------------------------------------------------
# parser and entry point
# ---------------------------------------------------------------------------------------------------


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, keep the descriptions' line breaks. An option whose default is None (chosen at run time)
    says its default in its own help instead of "(default: None)"."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _network_options(p) -> None:
    """The options that define a network and its inputs (shared by ``flow`` and ``sample``)."""
    from .activations import available_activations

    p.add_argument("-a", "--activation", required=True, type=_activation, metavar="ACT",
                   help=f"a registered name ({', '.join(available_activations())}; parameters as in 'leaky_relu(0.1)')"
                        " or a sympy expression in z, e.g. 'tanh(z)+0.1*z'")
    p.add_argument("-w", "--widths", required=True, type=_widths, metavar="N0,N1,...",
                   help="n_0,n_1,...,n_L (comma separated integers >= 1)")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=1.0, help="scalar or one value per layer")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="scalar or one value per layer")
    p.add_argument("--gamma", type=_reals, default=0.0,
                   help="residual shortcut z^(l) = gamma z^(l-1) + xi (b + W sigma): scalar (layers >= 2) or one per layer")
    p.add_argument("--xi", type=_reals, default=1.0, help="residual branch scale xi: scalar or one value per layer")
    p.add_argument("-x", "--inputs", required=True, type=_inputs_text, metavar="INPUTS",
                   help="a .npy file of shape (d, n_0), a literal '[[1,0],[0,1]]' or rows '1,0;0,1'")


def build_parser() -> argparse.ArgumentParser:
    from importlib import metadata

    from . import __version__
    from .montecarlo.runner import DEFAULT_MEMORY_BUDGET

    try:
        jax_version = metadata.version("jax")
    except metadata.PackageNotFoundError:
        jax_version = "not installed"
    p = _Parser(prog="pdlt", description="Perturbative theory of finite-width neural networks.",
                epilog="exit codes: 0 ok; 1 verify found failures or internal error; 2 bad input; "
                       "130 interrupted (SIGINT); 143 terminated (SIGTERM)")
    p.add_argument("--version", action="version", version=f"pdlt {__version__} (jax {jax_version})")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p.commands = {}

    def parser(name, help_):
        p.commands[name] = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)
        return p.commands[name]

    v = parser("verify", "derive and check predictions against independent oracles; print a table")
    v.add_argument("--out", default="pdlt-verify", help="output folder for verify.tex/json/pdf ('-' for none)")
    v.add_argument("--quick", action="store_true", help="fewer cases")
    v.add_argument("--no-pdf", action="store_true", help="do not run pdlatex even if available")
    v.add_argument("--no-mc", action="store_true", help="theory checks only (skip the Monte Carlo comparison)")
    v.add_argument("--processes", type=int, choices=(1, 2), default=None,
                   help="2: run Bayes against training and the NTK, breakdown and influence sections in a second "
                        "process (same results); default 2 on a machine with two or more cores")
    v.set_defaults(func=_cmd_verify)

    c = parser("criticality", "critical initialization and universality classes")
    c.add_argument("activations", nargs="*", type=_activation, metavar="ACT",
                   help="registered names ('tanh', 'leaky_relu(0.1)') or expressions in z (default: all registered)")
    c.add_argument("-a", "--activation", dest="more", action="append", type=_activation, metavar="ACT",
                   help="another activation (may be repeated)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--latex", action="store_true", help="booktabs table")
    g.add_argument("--json", action="store_true", help="strict JSON")
    c.set_defaults(func=_cmd_criticality)

    f = parser("flow", "leading-order kernel K^(l) per layer")
    _network_options(f)
    f.add_argument("--json", action="store_true", help="strict JSON")
    f.set_defaults(func=_cmd_flow)

    t = parser("table", "LaTeX document with the criticality table and recursions")
    t.add_argument("--out", help="write to this .tex file (default: stdout)")
    t.add_argument("--pdf", action="store_true", help="also compile with pdflatex (needs --out)")
    t.set_defaults(func=_cmd_table)

    s = parser("sample", "Monte Carlo: sample networks, estimate correlators with standard errors")
    _network_options(s)
    s.add_argument("--samples", type=_positive_int("--samples"), required=True, help="number of networks")
    s.add_argument("--seed", type=_seed, default=0, help="PRNG seed, 0 <= seed < 2^63")
    s.add_argument("--method", choices=("markov", "weights"), default="markov",
                   help="markov: exact layer-by-layer conditional Gaussians; weights: explicit W, b")
    s.add_argument("--batches", type=_positive_int("--batches", 2), default=32, help="jackknife batches (>= 2)")
    s.add_argument("--chunk-size", type=_positive_int("--chunk-size"), default=None,
                   help="networks per compiled call (default: from the memory budget)")
    s.add_argument("--memory-budget", default=DEFAULT_MEMORY_BUDGET / 2**20,
                   type=lambda t, mib=_real("--memory-budget", 0.0, open_minimum=True): None if t == "auto" else mib(t),
                   help="working memory per device, MiB, or auto: a quarter of each GPU's free memory (CPU: default)")
    s.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="network arithmetic (statistics are summed in float64 either way); float32 refuses kernels "
                        "outside ~[1e-30, 1e30]")
    s.add_argument("--out", help="save the result: OUT.npz + OUT.json")
    s.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (.npz): resumed from if it exists")
    s.add_argument("--checkpoint-every", type=_real("--checkpoint-every", 0.0), default=None, metavar="SECONDS",
                   help="seconds between checkpoint writes (0: after every chunk; default: the runner's, 60)")
    s.add_argument("--json", action="store_true", help="strict JSON with everything needed to reproduce the run")
    s.add_argument("--part", type=_part, default=None, metavar="I/K",
                   help="sample only part I (0..K-1) of K of the networks, e.g. one task of a job array; "
                        "combine the saved parts with 'pdlt merge'")
    d = s.add_argument_group("several processes or hosts (jax.distributed; start every process with the same "
                             "options, only --process-id differs)")
    d.add_argument("--distributed", action="store_true",
                   help="share the run among the processes of a jax.distributed run; process 0 prints, saves "
                        "--out and writes the checkpoint")
    d.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="address of process 0 (default: detected from the cluster environment, e.g. SLURM)")
    d.add_argument("--num-processes", type=_positive_int("--num-processes"), default=None, help="processes in all")
    d.add_argument("--process-id", type=_positive_int("--process-id", 0), default=None, help="this process, 0..N-1")
    d.add_argument("--init-timeout", type=_real("--init-timeout", 1.0), default=60.0, metavar="SECONDS",
                   help="how long a process waits for the coordinator")
    s.set_defaults(func=_cmd_sample)

    m = parser("merge", "combine saved parts of one Monte Carlo run (pdlt sample --part I/K --out ...)")
    m.add_argument("out", help="the merged result: OUT.npz + OUT.json")
    m.add_argument("parts", nargs="+", metavar="PART", help="saved parts (.npz) of one run, in any order")
    m.add_argument("--json", action="store_true", help="strict JSON")
    m.set_defaults(func=_cmd_merge)

    b = parser("bench", "benchmarks (ratios/throughputs measured in one run)")
    b.add_argument("what", nargs="?", default="theory", choices=("theory", "mc", "ntk", "train", "nnlo"),
                   help="theory: leading-order and finite-width pipeline timings; mc: sampler throughputs "
                        "(markov, weights, NTK and training networks/s; markov and weights against the raw normals "
                        "they need; device scaling; exponents of the cost in n, L, d; time to V^(L) at 1%%); ntk: NTK "
                        "statistics (theory seconds at d, L; Monte Carlo cost against the plain weights sampler); "
                        "train: trained ensembles (theory seconds, Monte Carlo wall time against the targets); "
                        "nnlo: beyond O(1/n)")
    b.add_argument("--networks", type=_positive_int("--networks"), default=10_000,
                   help="train: networks in the timed training ensemble")
    b.add_argument("--d", type=_positive_int("--d"), default=None, help="inputs (theory: 4, mc: 4)")
    b.add_argument("--L", type=_positive_int("--L"), default=None, help="depth (theory: 50, mc: 8)")
    b.add_argument("--n", type=_positive_int("--n"), default=512, help="mc: width")
    b.add_argument("--min-time", type=_real("--min-time", 0.0, open_minimum=True), default=None,
                   help="mc: seconds per timed measurement (default 3; with --quick 0.1)")
    b.add_argument("--quick", action="store_true",
                   help="mc: a short smoke run (min-time 0.1, two sizes per growth axis, small NTK, training and "
                        "V^(L) runs, devices K = 1, 2 in one process); its numbers are not for keeping")
    b.add_argument("--full", action="store_true", help="mc: also run the V^(L)-to-1%% case in full")
    b.add_argument("--no-vertex", action="store_true", help="mc: skip the V^(L)-to-1%% estimate")
    b.add_argument("--json-out", metavar="PATH",
                   help="also write the results as strict JSON (non-finite numbers null) with the device, backend, "
                        "versions, date and parameters")
    b.add_argument("--compare", metavar="OLD.json",
                   help="after the run, print new/old for every number also in OLD.json (an earlier --json-out of "
                        "the same benchmark) and mark rates that dropped by more than 10%% (times that grew "
                        "as much) SLOWER")
    b.set_defaults(func=_cmd_bench)
    return p


def _warnings_to_lines(caught, cmd: str) -> None:
    """pdlt's warnings as one line each on stderr (an interrupted run's IncompleteWarning is covered by the
    interruption line)."""
    from .errors import IncompleteWarning

    seen = set()
    for w in caught:
        if issubclass(w.category, IncompleteWarning):
            continue
        msg = _one_line(w.message)
        if msg not in seen:
            seen.add(msg)
            _stderr_line(f"pdlt {cmd}: warning: {msg}")


def main(argv=None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status (see module doc)."""
    import warnings

    from .errors import PdltWarning

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser, so the line starts "pdlt CMD: error:"
            parser.commands[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version, or a one-line usage error already printed
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _stderr_line("pdlt: interrupted")
        return EXIT_SIGNAL["SIGINT"]
    args._argv = argv
    cmd = args.cmd

    def on_signal(signum, frame):
        # outside pdlt.sample's own handlers (which save and return a partial result) there is nothing to save:
        # one line and the conventional exit code. Raising instead would surface inside JAX or a gc callback,
        # where it is swallowed or becomes a traceback.
        name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
        if cmd == "sample":
            line = f"pdlt sample: {_interrupt_advice(args, _checkpoint_done(args))}"
        else:
            line = f"pdlt {cmd}: interrupted ({name})"
        os.write(2, (line + "\n").encode())
        os._exit(EXIT_SIGNAL[name])

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PdltWarning)
            try:
                return args.func(args)
            finally:
                _warnings_to_lines(caught, cmd)
    except KeyboardInterrupt:  # raised by code that called the default handler itself
        if cmd == "sample":
            _stderr_line(f"pdlt sample: {_interrupt_advice(args, _checkpoint_done(args))}")
        else:
            _stderr_line(f"pdlt {cmd}: interrupted (SIGINT)")
        return EXIT_SIGNAL["SIGINT"]
    except (ValueError, OSError) as err:  # PdltError is a ValueError: bad input, a message naming the option
        _stderr_line(f"pdlt {cmd}: error: {_one_line(err)}")
        return EXIT_BAD_INPUT
    except MemoryError:
        sizes = "--d and --L" if cmd == "bench" else "--memory-budget or --chunk-size, or the widths"
        _stderr_line(f"pdlt {cmd}: error: out of memory; lower {sizes}")
        return EXIT_BAD_INPUT
    except Exception as err:  # a bug: still one line, never a traceback; PDLT_DEBUG=1 shows it
        if os.environ.get("PDLT_DEBUG"):
            raise
        _stderr_line(f"pdlt {cmd}: internal error: {type(err).__name__}: {_one_line(err)} "
                     "(please report it; rerun with PDLT_DEBUG=1 for the traceback)")
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _checkpoint_done(args) -> int:
    """Networks in the checkpoint (0 if none): what an interruption outside the sampling loop leaves."""
    if not getattr(args, "checkpoint", None):
        return 0
    try:
        from .montecarlo.runner import npz_path, load

        path = npz_path(args.checkpoint)
        return load(path).n_samples if os.path.exists(path) else 0
    except Exception:  # a corrupt checkpoint: nothing usable
        return 0
