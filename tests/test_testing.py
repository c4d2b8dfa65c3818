"""The public hypothesis strategies produce valid objects, and properties every kernel flow must have."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.testing import activations, datasets, hyperparameters, mlps, psd_kernels


@given(K=psd_kernels(d=3, max_abs_rho=0.9))
def test_psd_kernels_are_psd(K):
    assert np.allclose(K, K.T)
    assert np.linalg.eigvalsh(K).min() > -1e-12
    s = np.sqrt(np.diag(K))
    assert np.all(np.abs(K / np.outer(s, s) - np.eye(3)) <= 0.9 + 1e-12)


@given(x=datasets(d=3, n0=4))
def test_datasets_are_separated(x):
    assert x.shape == (3, 4)
    c = x @ x.T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
    assert np.all(np.abs(c[~np.eye(3, dtype=bool)]) < np.cos(0.2) + 1e-12)


@settings(max_examples=15)
@given(net=mlps(depth=(1, 4), n0=3), x=datasets(d=2, n0=3))
def test_flow_is_psd_and_bounded_below_by_bias(net, x):
    """K^(l) is a covariance (PSD), and K^(l)_aa >= C_b^(l) since <sigma^2> >= 0."""
    flow = pdlt.kernel_flow(net, x)
    for l in range(1, net.L + 1):
        K = flow[l]
        assert np.linalg.eigvalsh(K).min() >= -1e-10 * np.abs(K).max()
        assert np.all(np.diag(K) >= net.C_b[l - 1] - 1e-12)


@settings(max_examples=10)
@given(act=activations(), hp=hyperparameters())
def test_activation_strategy_usable(act, hp):
    s = pdlt.single_input(act, np.array([0.5, 2.0]), hp[0])
    assert np.all(np.isfinite(s.chi_par)) and np.all(s.chi_perp >= 0)


@settings(max_examples=10)
@given(a=st.floats(-0.9, 0.9), lam=st.floats(0.2, 5.0), x=datasets(d=2, n0=3), C_W=st.floats(0.5, 2.5))
def test_scale_invariant_covariance_under_input_rescaling(a, lam, x, C_W):
    """sigma(lam z) = lam sigma(z) for lam > 0, so with C_b = 0 the whole flow scales: K(lam x) = lam^2 K(x)."""
    net = pdlt.MLP(pdlt.activation("leaky_relu", slope=a), (3, 5, 5, 5), C_W, 0.0)
    np.testing.assert_allclose(pdlt.kernel_flow(net, lam * x).K, lam**2 * pdlt.kernel_flow(net, x).K, rtol=1e-12)
