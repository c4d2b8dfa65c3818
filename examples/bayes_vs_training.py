"""Bayesian inference against gradient training: the same initialization ensemble, two ways of learning the data.

For a tanh network and three training points, the mean test outputs of the noiseless Bayesian posterior and of
networks trained by gradient descent, each at infinite width, to O(1/n) and by Monte Carlo (reweighted and
trained networks), in two settings: training only the last layer with lambda_b/lambda_W = C_b/C_W, where the two
agree at infinite width (both are the NNGP posterior), and training every layer, where they differ already
there. At finite width they separate even in the first setting: training averages each network's own kernel
regression, Bayes weights each network by its evidence. Writes a LaTeX table and a plot.

Run: python examples/bayes_vs_training.py [OUT_DIR] [N_TRAINED]   (defaults: bayes-training-out, 10000)
"""
import sys
import warnings
from pathlib import Path

import numpy as np

import pdlt
from pdlt.bayes_vs_training import SETTINGS, bayes_vs_training
from pdlt.latex import document

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bayes-training-out")
n_trained = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
out.mkdir(parents=True, exist_ok=True)

x_train = np.array([[1.0, 0.4, -0.3], [-0.5, 0.8, 0.2], [0.3, -0.9, 0.5]])
y_train = np.array([0.9, -0.6, 0.4])
x_test = np.array([[0.6, -0.3, -0.8], [0.1, 0.5, 0.5]])
net = pdlt.MLP("tanh", (3, 8, 8, 1), C_W=1.2, C_b=0.1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pdlt.TruncationWarning)   # n = 8: the 1/n terms are not small, and shown
    bvt = bayes_vs_training(net, x_train, y_train, x_test, n_bayes=5 * n_trained, n_train=n_trained, seed=0,
                            eta_fraction=0.3)
print(bvt.to_markdown())

# exact statements: the last-layer setting is the NNGP posterior at infinite width, the other is not
np.testing.assert_allclose(bvt.train_inf[0], bvt.bayes_inf, rtol=1e-9, atol=1e-12)
assert np.abs(bvt.train_inf[1] - bvt.bayes_inf).max() > 0.02
assert bvt.diverged == (0, 0)
for s, label in enumerate(SETTINGS):
    dth, dmc, dse = bvt.difference(s)
    print(f"{label}: training - Bayes, O(1/n) theory {np.round(dth, 4)}, Monte Carlo {np.round(dmc, 4)} "
          f"+- {np.round(dse, 4)}")

(out / "bayes_vs_training.tex").write_text(document(bvt.to_latex(), title="Bayes against training"))
from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    plots.bayes_vs_training_plot(bvt, path=out / "bayes_vs_training.png")
    print(f"wrote {out / 'bayes_vs_training.png'}")
print(f"wrote {out / 'bayes_vs_training.tex'}")
