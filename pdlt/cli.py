"""The ``pdlt`` command (also ``python -m pdlt``).

    pdlt verify [--out DIR] [--quick] [--no-pdf] [--no-mc]   derive, check against independent oracles and
                                                      Monte Carlo of sampled networks, print tables
    pdlt criticality [ACT ...] [--latex | --json]     critical (C_b, C_W, K*) and universality class
    pdlt flow -a ACT -w 3,64,64,1 --C-W 1 --C-b 0 -x INPUTS [--json]   K^(l) per layer
    pdlt table [--out FILE.tex] [--pdf]               LaTeX document: criticality table + recursions
    pdlt sample -a ACT -w 3,64,64 --C-W 1 --C-b 0 -x INPUTS --samples N [--seed S] [--method markov|weights]
                [--out run.npz] [--checkpoint ck.npz] [--json]   Monte Carlo estimates with standard errors
    pdlt bench theory                                 timing of the leading-order pipeline
    pdlt bench mc [--n 512 --L 8 --d 4] [--full]      sampler throughputs as ratios (markov, weights, raw normals)
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time

import numpy as np

__all__ = ["main"]


def _floats(text: str):
    vals = [float(v) for v in text.split(",") if v.strip()]
    return vals[0] if len(vals) == 1 else vals


def _ints(text: str):
    return [int(v) for v in text.split(",") if v.strip()]


def _inputs(text: str) -> np.ndarray:
    if text.endswith(".npy"):
        try:
            return np.load(text)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read inputs file {text!r}: {err}") from None
    try:
        return np.asarray(ast.literal_eval(text), dtype=np.float64)
    except (ValueError, SyntaxError, TypeError):
        raise ValueError(f"--inputs must be a .npy file or a numeric literal like '[[1,0],[0,1]]' "
                         f"(no nan/inf), got {text!r}") from None


def _cmd_criticality(args) -> int:
    from .activations import available_activations
    from .theory.criticality import criticality

    names = args.activations or [n for n in available_activations() if n not in ("silu", "leaky_relu")] + ["leaky_relu(0.1)"]
    res = [criticality(n) for n in names]
    if args.json:
        print(json.dumps([r.as_dict() for r in res], indent=2, default=float))
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


def _network_options(p) -> None:
    """The options that define a network and its inputs (shared by ``flow`` and ``sample``)."""
    p.add_argument("-a", "--activation", required=True)
    p.add_argument("-w", "--widths", required=True, help="n_0,n_1,...,n_L (comma separated)")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=1.0, help="scalar or one value per layer")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="scalar or one value per layer")
    p.add_argument("-x", "--inputs", required=True, help="a .npy file of shape (d, n_0) or a literal '[[...],[...]]'")


def _print_table(head, body):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for b in body:
        print(fmt.format(*b))


def _cmd_flow(args) -> int:
    from .architecture import MLP
    from .theory.kernel import kernel_flow

    net = MLP(args.activation, _ints(args.widths), args.C_W, args.C_b)
    flow = kernel_flow(net, _inputs(args.inputs))
    if args.json:
        print(json.dumps({"activation": net.activation.name, "widths": net.widths, "C_W": net.C_W, "C_b": net.C_b,
                          "K": flow.K.tolist()}, indent=2))
        return 0
    np.set_printoptions(precision=10, suppress=False, linewidth=120)
    print(f"# {net.activation.name}, widths={net.widths}, C_W={net.C_W[0]:g}{'..' if len(set(net.C_W)) > 1 else ''}, "
          f"C_b={net.C_b[0]:g}{'..' if len(set(net.C_b)) > 1 else ''}, d={flow.d}")
    for l in range(1, net.L + 1):
        K = flow[l]
        if flow.d == 1:
            print(f"l={l:4d}  K={K[0, 0]:.12g}")
        else:
            print(f"l={l:4d}  K=\n{K}")
    return 0


def _cmd_verify(args) -> int:
    from .verify import run_verify

    rows, summary = run_verify(None if args.out == "-" else args.out, quick=args.quick, compile_tex=not args.no_pdf,
                               monte_carlo=not args.no_mc)
    return 0 if summary["failed"] == 0 else 1


def _cmd_table(args) -> int:
    from .activations import available_activations
    from .latex import compile_pdf, criticality_table, document, recursion_equations
    from .theory.criticality import criticality

    names = [n for n in available_activations() if n not in ("silu", "leaky_relu")] + ["leaky_relu(0.1)"]
    parts = [criticality_table([criticality(n) for n in names]), r"\section*{Leading-order recursions}"]
    for n in ("linear", "relu", "erf", "sin", "tanh"):
        parts.append(r"\paragraph{%s}" % n + "\n" + recursion_equations(n))
    tex = document(*parts, title="pdlt: criticality of registered activations")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(tex)
        print(f"wrote {args.out}")
        if args.pdf:
            import os

            out = os.path.dirname(os.path.abspath(args.out))
            name = os.path.splitext(os.path.basename(args.out))[0]
            print(f"wrote {compile_pdf(tex, out, name)}")
    else:
        print(tex)
    return 0


def bench_theory(d: int = 4, L: int = 50, repeats: int = 3) -> dict:
    """Time the leading-order flow + criticality analysis for d inputs and L layers (tanh and gelu at their
    critical points, relu; criticality caches cleared each repeat, JAX already warm), and the finite-width
    K, G1, V for (d, L) and (1, 1000). Returns seconds (best of repeats) per case, and 2D quadrature
    throughput."""
    from .architecture import MLP
    from .gaussian import bench_expect
    from .theory import criticality as crit_mod
    from .theory.kernel import kernel_flow

    rng = np.random.default_rng(0)
    x = rng.normal(size=(d, 8))
    out = {}
    for name in ("tanh", "relu", "gelu"):
        best = np.inf
        for _ in range(repeats):
            crit_mod._criticality_cached.cache_clear()
            crit_mod._mp_callables.cache_clear()
            t0 = time.perf_counter()
            c = crit_mod.criticality(name)
            net = MLP(name, (8,) + (64,) * L, C_W=c.C_W, C_b=c.C_b)
            kernel_flow(net, x)
            crit_mod.correlation_length(name, 0.9 * c.C_W, c.C_b + 0.05)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}: criticality + flow (d={d}, L={L}) [s]"] = best
    from .theory.finite_width import finite_width

    for name in ("tanh", "relu", "gelu"):
        c = crit_mod.criticality(name)
        for dd, LL in ((d, L), (1, 1000)):
            net = MLP(name, (8,) + (64,) * LL, C_W=c.C_W, C_b=c.C_b)
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                finite_width(net, x[:dd])
                best = min(best, time.perf_counter() - t0)
            out[f"{name}: K, G1, V (d={dd}, L={LL}) [s]"] = best
    out.update({f"gaussian.expect {k} [1/s]": v for k, v in bench_expect(n_kernels=10_000).items()})
    return out


def _cmd_bench(args) -> int:
    if args.what not in ("theory", "mc"):
        print(f"pdlt bench: unknown benchmark {args.what!r} (available: theory, mc)", file=sys.stderr)
        return 2
    if args.what == "mc":
        from .montecarlo.bench import bench_mc

        res = bench_mc(n=args.n, L=args.L if args.L is not None else 8, d=args.d if args.d is not None else 4,
                       min_time=args.min_time, full=args.full, vertex=not args.no_vertex)
        for k, v in res.items():
            print(f"{k:85s} {v}" if isinstance(v, str) else f"{k:85s} {v:12.4g}")
        return 0
    res = bench_theory(d=args.d if args.d is not None else 4, L=args.L if args.L is not None else 50)
    for k, v in res.items():
        print(f"{k:60s} {v:12.4g}")
    return 0


def _cmd_sample(args) -> int:
    from .architecture import MLP
    from .montecarlo.runner import sample

    net = MLP(args.activation, _ints(args.widths), args.C_W, args.C_b)
    kw = {}
    if args.memory_budget is not None:
        kw["memory_budget"] = int(args.memory_budget * 2**20)
    res = sample(net, _inputs(args.inputs), args.samples, args.seed, method=args.method, batches=args.batches,
                 chunk_size=args.chunk_size, checkpoint=args.checkpoint, progress=not args.json and None, **kw)
    if args.out:
        path = res.save(args.out)
        if not args.json:
            print(f"wrote {path} and {path[:-4]}.json")
    if args.json:
        print(json.dumps({"config": {k: v for k, v in res.config.items() if k != "x"}, "n_samples": res.n_samples,
                          "complete": res.complete, "elapsed_s": res.elapsed,
                          **{name: {"mean": getattr(res, name).mean.tolist(), "stderr": getattr(res, name).stderr.tolist()}
                             for name in ("two_point", "four_point", "four_point_single", "six_point_single", "vertex")}},
                         indent=1, default=float))
    else:
        print(res.summary())
    return 0 if res.complete else 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdlt", description="Perturbative theory of finite-width neural networks.")
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("verify", help="derive and check predictions against independent oracles; print a table")
    v.add_argument("--out", default="pdlt-verify", help="output folder for verify.tex/json/pdf ('-' for none)")
    v.add_argument("--quick", action="store_true", help="fewer cases")
    v.add_argument("--no-pdf", action="store_true", help="do not run pdlatex even if available")
    v.add_argument("--no-mc", action="store_true", help="theory checks only (skip the Monte Carlo comparison)")
    v.set_defaults(func=_cmd_verify)

    c = sub.add_parser("criticality", help="critical initialization and universality classes")
    c.add_argument("activations", nargs="*", help="e.g. tanh relu 'leaky_relu(0.1)' (default: all registered)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--latex", action="store_true", help="booktabs table")
    g.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_criticality)

    f = sub.add_parser("flow", help="leading-order kernel K^(l) per layer")
    _network_options(f)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_cmd_flow)

    t = sub.add_parser("table", help="LaTeX document with the criticality table and recursions")
    t.add_argument("--out", help="write to this .tex file (default: stdout)")
    t.add_argument("--pdf", action="store_true", help="also compile with pdflatex")
    t.set_defaults(func=_cmd_table)

    s = sub.add_parser("sample", help="Monte Carlo: sample networks, estimate correlators with standard errors")
    _network_options(s)
    s.add_argument("--samples", type=int, required=True, help="number of networks")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--method", choices=("markov", "weights"), default="markov")
    s.add_argument("--batches", type=int, default=32, help="jackknife batches")
    s.add_argument("--chunk-size", type=int, default=None, help="networks per compiled call (default: from the budget)")
    s.add_argument("--memory-budget", type=float, default=None, help="working memory per device, MiB")
    s.add_argument("--out", help="save the result: OUT.npz + OUT.json")
    s.add_argument("--checkpoint", help="checkpoint file (.npz): resumed from if it exists")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_sample)

    b = sub.add_parser("bench", help="benchmarks (ratios/throughputs measured in one run): theory | mc")
    b.add_argument("what", nargs="?", default="theory")
    b.add_argument("--d", type=int, default=None, help="inputs (theory: 4, mc: 4)")
    b.add_argument("--L", type=int, default=None, help="depth (theory: 50, mc: 8)")
    b.add_argument("--n", type=int, default=512, help="mc: width")
    b.add_argument("--min-time", type=float, default=3.0, help="mc: seconds per timed measurement")
    b.add_argument("--full", action="store_true", help="mc: also run the V^(L)-to-1%% case in full")
    b.add_argument("--no-vertex", action="store_true", help="mc: skip the V^(L)-to-1%% estimate")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # bad input: a clear message, not a traceback
        print(f"pdlt {args.cmd}: error: {err}", file=sys.stderr)
        return 2
