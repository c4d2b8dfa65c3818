r"""Bayesian inference against gradient training: the two ways a network learns data, side by side.

For one dataset and architecture, each test output's mean from

* Bayes: the exact posterior of the initialization ensemble conditioned on the training targets (noiseless):
  theory at infinite width (the NNGP posterior) and to O(1/n) (:func:`pdlt.posterior`), and the Monte Carlo of
  sampled networks reweighted by the likelihood (:func:`pdlt.posterior_mc`);
* training: full-batch gradient descent on the MSE loss from the same initialization ensemble: theory at infinite
  width (frozen NTK) and to O(1/n) (:func:`pdlt.train_prediction`), and the Monte Carlo of trained networks
  (:func:`pdlt.sample_trained`).

Two settings: training only the last layer with ``lambda_b / lambda_W = C_b / C_W`` (then ``Theta = (lambda_W /
C_W) K``: Bayes and training agree at infinite width, derivations/README.md section 19) and training every layer
(they differ already at infinite width). At finite width the two differ even in the first setting: training
averages the frozen-NTK regression ``E[G_dA G~^{-1}] y`` over initializations, while Bayes weights each network by
its evidence ``N(y; 0, G~)``; the table shows that difference, predicted and measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architecture import MLP
from .errors import ParameterError

__all__ = ["BayesVsTraining", "bayes_vs_training", "SETTINGS"]

#: the two training settings (label, which layers are trained)
SETTINGS = ("last layer, lambda_b/lambda_W = C_b/C_W", "all layers")


@dataclass(frozen=True)
class BayesVsTraining:
    """Means at the test inputs (output 0), per setting ``s`` (:data:`SETTINGS`) and test input ``d``:
    ``bayes_inf``, ``bayes_1`` ``(N_T,)`` (the posterior does not depend on the setting), ``train_inf[s]``,
    ``train_1[s]`` ``(N_T,)`` (theory), ``bayes_mc``, ``bayes_se`` ``(N_T,)`` and ``train_mc[s]``, ``train_se[s]``
    (Monte Carlo), with ``n = n_{L-1}``, the networks of each Monte Carlo and the training parameters."""

    net: MLP
    x_test: np.ndarray
    bayes_inf: np.ndarray
    bayes_1: np.ndarray
    bayes_mc: np.ndarray
    bayes_se: np.ndarray
    train_inf: tuple
    train_1: tuple
    train_mc: tuple
    train_se: tuple
    n_bayes: int
    n_train: int
    eta: tuple
    steps: int
    diverged: tuple

    @property
    def n(self) -> int:
        return int(self.net.widths[self.net.L - 1])

    def difference(self, s: int):
        """Training minus Bayes at the test inputs for setting ``s``: ``(theory O(1/n), Monte Carlo, its standard
        error)`` (the two Monte Carlo runs are independent, so their errors add in quadrature)."""
        from .validation import check_int

        s = check_int(s, "s", minimum=0, maximum=len(SETTINGS) - 1)
        return (self.train_1[s] - self.bayes_1, self.train_mc[s] - self.bayes_mc,
                np.hypot(self.train_se[s], self.bayes_se))

    def table_rows(self):
        """``(setting, test input, bayes_inf, bayes_1, bayes_mc, bayes_se, train_inf, train_1, train_mc, train_se)``
        per setting and test input."""
        out = []
        for s, label in enumerate(SETTINGS):
            for d in range(self.x_test.shape[0]):
                out.append((label, d, self.bayes_inf[d], self.bayes_1[d], self.bayes_mc[d], self.bayes_se[d],
                            self.train_inf[s][d], self.train_1[s][d], self.train_mc[s][d], self.train_se[s][d]))
        return out

    def to_markdown(self) -> str:
        head = ("| setting | test | Bayes inf | Bayes O(1/n) | Bayes MC | train inf | train O(1/n) | train MC | "
                "train - Bayes O(1/n) | train - Bayes MC |")
        lines = [head, "|" + "---|" * 10]
        for s, label in enumerate(SETTINGS):
            dth, dmc, dse = self.difference(s)
            for d in range(self.x_test.shape[0]):
                lines.append(f"| {label} | {d} | {self.bayes_inf[d]:.4f} | {self.bayes_1[d]:.4f} | "
                             f"{self.bayes_mc[d]:.4f} +- {self.bayes_se[d]:.4f} | {self.train_inf[s][d]:.4f} | "
                             f"{self.train_1[s][d]:.4f} | {self.train_mc[s][d]:.4f} +- {self.train_se[s][d]:.4f} | "
                             f"{dth[d]:+.4f} | {dmc[d]:+.4f} +- {dse[d]:.4f} |")
        return "\n".join(lines)

    def to_latex(self, caption: str | None = None) -> str:
        """A booktabs table (compiles with the preamble of :func:`pdlt.latex.document`)."""
        from .latex import booktabs, fmt_number as _fmt, fmt_uncertainty

        def fmt_number(v):
            return _fmt(v, digits=4)

        body = []
        for s, label in enumerate(SETTINGS):
            dth, dmc, dse = self.difference(s)
            tex_label = (r"last layer, $\lambda_b/\lambda_W=C_b/C_W$" if s == 0 else "all layers")
            for d in range(self.x_test.shape[0]):
                body.append([tex_label if d == 0 else "", f"{d}", f"${fmt_number(self.bayes_inf[d])}$",
                             f"${fmt_number(self.bayes_1[d])}$",
                             f"${fmt_uncertainty(self.bayes_mc[d], self.bayes_se[d])}$",
                             f"${fmt_number(self.train_inf[s][d])}$", f"${fmt_number(self.train_1[s][d])}$",
                             f"${fmt_uncertainty(self.train_mc[s][d], self.train_se[s][d])}$",
                             f"${fmt_number(dth[d])}$", f"${fmt_uncertainty(dmc[d], dse[d])}$"])
        L = self.net.L
        cap = caption or (
            rf"Bayes against training, {self.net.activation.name}, $L={L}$, $n={self.n}$: mean test outputs of the "
            r"noiseless posterior (infinite width, $O(1/n)$, Monte Carlo by exact reweighting of "
            rf"{self.n_bayes:,} networks) and of gradient descent ({self.steps} steps; theory at infinite width "
            rf"and $O(1/n)$, Monte Carlo of {self.n_train:,} trained networks per setting); last two columns: "
            r"training minus Bayes. One standard error in parentheses.")
        return booktabs(["setting", r"$\delta$", r"$m^{\rm B}_\infty$", r"$m^{\rm B}_{1/n}$", r"$m^{\rm B}_{\rm MC}$",
                         r"$m^{\rm T}_\infty$", r"$m^{\rm T}_{1/n}$", r"$m^{\rm T}_{\rm MC}$", r"$\Delta_{1/n}$",
                         r"$\Delta_{\rm MC}$"], body, align="llrrrrrrrr", caption=cap, label="tab:bayes-training")


def _rates(net: MLP, setting: int, lambda_W: float):
    """Learning rates of a setting: every layer ``(lambda_W C_b/C_W, lambda_W)`` for the last layer's ratio, or the
    last layer only."""
    L = net.L
    C_W, C_b = net.hyper(L)
    lb_last = lambda_W * C_b / C_W
    if setting == 0:
        return (0.0,) * (L - 1) + (lb_last,), (0.0,) * (L - 1) + (lambda_W,)
    return (lb_last,) * L, (lambda_W,) * L


def bayes_vs_training(net: MLP, x_train, y_train, x_test, *, lambda_W: float = 1.0, eta_fraction: float = 0.5,
                      steps: int = 300, n_bayes: int = 50_000, n_train: int = 4_000, seed: int = 0,
                      progress: bool = False) -> BayesVsTraining:
    """Theory and Monte Carlo of Bayes and training (module docstring) for ``net`` (one output) on the data.

    Each setting trains with step size ``eta = eta_fraction * 2/lambda_max(Theta~)`` (a fraction of its own
    stability limit, so that the networks' fluctuating NTKs stay stable) for ``steps`` steps; the theory uses the
    same eta and steps. ``n_bayes`` prior networks for the reweighted posterior, ``n_train`` per training run."""
    from .montecarlo.bayes import posterior_mc
    from .montecarlo.runner import sample_trained
    from .theory.bayes import posterior
    from .theory.training import stability_limit, train_prediction
    from .validation import check_real

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if net.widths[-1] != 1:
        raise ParameterError(f"bayes_vs_training compares one output; got n_L = {net.widths[-1]}", "net")
    eta_fraction = check_real(eta_fraction, "eta_fraction", minimum=0.0, maximum=1.0, open_minimum=True)
    if eta_fraction == 1.0:
        raise ParameterError("eta_fraction must be < 1: at 1 the step is the stability limit of gradient descent, "
                             "where the training residuals stop decaying", "eta_fraction")
    lambda_W = check_real(lambda_W, "lambda_W", minimum=0.0, open_minimum=True)
    if not net.hyper(net.L)[0] > 0:
        raise ParameterError("the first setting trains the last layer with lambda_b/lambda_W = C_b/C_W, which needs "
                             f"the last layer's C_W > 0 (got C_W^({net.L}) = {net.hyper(net.L)[0]:g})", "C_W")
    post = posterior(net, x_train, y_train, x_test, noise_var=0.0)
    bmc = posterior_mc(net, x_train, y_train, x_test, noise_var=0.0, n_samples=n_bayes, seed=seed)
    t_inf, t_1, t_mc, t_se, etas, div = [], [], [], [], [], []
    for s in range(2):
        lb, lw = _rates(net, s, lambda_W)
        eta = eta_fraction * stability_limit(net, x_train, lb, lw)
        th = train_prediction(net, x_train, y_train, x_test, lb, lw, eta=eta, steps=steps)
        mc = sample_trained(net, x_train, y_train, x_test, n_train, seed=seed + 1 + s, lambda_b=lb, lambda_W=lw,
                            eta=eta, steps=steps, progress=progress)
        t_inf.append(th.mean[:, 0])
        t_1.append(th.mean_finite[:, 0])
        t_mc.append(np.asarray(mc.mean.mean)[:, 0])
        t_se.append(np.asarray(mc.mean.stderr)[:, 0])
        etas.append(eta)
        div.append(int(mc.diverged))
    return BayesVsTraining(net=net, x_test=np.atleast_2d(np.asarray(x_test, dtype=np.float64)),
                           bayes_inf=post.mean_infinite[:, 0], bayes_1=post.mean[:, 0],
                           bayes_mc=np.asarray(bmc.mean.mean)[:, 0], bayes_se=np.asarray(bmc.mean.stderr)[:, 0],
                           train_inf=tuple(t_inf), train_1=tuple(t_1), train_mc=tuple(t_mc), train_se=tuple(t_se),
                           n_bayes=int(n_bayes), n_train=int(n_train), eta=tuple(etas), steps=int(steps),
                           diverged=tuple(div))
