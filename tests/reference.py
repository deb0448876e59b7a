"""Plain numpy (float64) implementation of SPEC §2–3, written apart from jaxcl, for checks."""

import numpy as np


def softmax(s, axis=-1):
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def encode(w, b, X):
    """f(X)_i = Σ_r BReLU_{b_i}(⟨w_i, H_r⟩), H = softmax(X Xᵀ/√d1) X, for X of shape (..., L, d1)."""
    X = np.asarray(X, np.float64)
    lead = X.shape[:-2]
    L, d1 = X.shape[-2:]
    out = np.zeros(lead + (w.shape[0],))
    for idx in np.ndindex(*lead):
        x = X[idx]
        H = softmax(x @ x.T / np.sqrt(d1)) @ x
        for i in range(w.shape[0]):
            s = H @ w[i]
            out[idx + (i,)] = (np.maximum(s - b[i], 0) - np.maximum(-s - b[i], 0)).sum()
    return out


def info_nce(w, b, Xa, Xb, tau, lam, fb=None):
    """Eq. 2 with eq. 1's StopGrad: pass a fixed `fb` to differentiate through the anchors only."""
    fa = encode(w, b, Xa)
    fb = encode(w, b, Xb) if fb is None else fb
    s = fa @ fb.T / tau
    mx = s.max(axis=1, keepdims=True)
    lse = (mx + np.log(np.exp(s - mx).sum(axis=1, keepdims=True)))[:, 0]
    return np.mean(lse - np.diag(s)) + 0.5 * lam * np.sum(w * w)
