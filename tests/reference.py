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


# ---- SPEC §5 observables, from saved arrays (w0, w, b, M, eps), in float64 loops


def sets(w0, w, b, M, eps, gamma_c0=5e-4):
    """Ordinary/lucky sets at init (eqs. 16-17), N_i(0), N_i(T), F_i(T) as Python sets."""
    d = M.shape[1]
    r = eps.min() / eps.max()
    c1, c2 = 2 * (1 + gamma_c0) / r**2, 2 * (1 - gamma_c0) * r**2
    t = np.log(d) / d

    def learned(v):
        a = M.T @ np.asarray(v, np.float64)
        s = float(a @ a)
        return {j for j in range(d) if a[j] ** 2 >= c2 * t * s}, a, s

    out = {
        "M": [set() for _ in range(d)],
        "Mstar": [set() for _ in range(d)],
        "N0": [],
        "N": [],
        "F": [],
    }
    for i in range(w.shape[0]):
        n0, a0, s0 = learned(w0[i])
        out["N0"].append(n0)
        for j in n0:
            out["M"][j].add(i)
        for j in range(d):
            if a0[j] ** 2 >= c1 * t * s0 and all(
                a0[k] ** 2 <= c2 * t * s0 for k in range(d) if k != j
            ):
                out["Mstar"][j].add(i)
        n, a, _ = learned(w[i])
        out["N"].append(n)
        out["F"].append({j for j in range(d) if abs(a[j]) > b[i]})
    return out


def probe(f_tr, y_tr, f_te, y_te, ridge):
    """Ridge probe on standardized |f|, midpoint cut, balanced accuracy (NaN if undefined)."""
    g_tr, g_te = np.abs(f_tr), np.abs(f_te)
    mu, sd = g_tr.mean(0), g_tr.std(0)
    keep = sd > 1e-12
    z_tr = (g_tr[:, keep] - mu[keep]) / sd[keep]
    z_te = (g_te[:, keep] - mu[keep]) / sd[keep]
    n = z_tr.shape[0]
    out = []
    for j in range(y_tr.shape[1]):
        y = y_tr[:, j].astype(float)
        beta = np.linalg.lstsq(
            z_tr.T @ z_tr + n * ridge * np.eye(z_tr.shape[1]), z_tr.T @ (y - y.mean()), rcond=None
        )[0]
        p = z_tr @ beta
        yt = y_te[:, j].astype(bool)
        if y.sum() in (0, n) or yt.sum() in (0, len(yt)):
            out.append(np.nan)
            continue
        cut = 0.5 * (p[y == 1].mean() + p[y == 0].mean())
        hat = z_te @ beta > cut
        out.append(0.5 * ((hat & yt).sum() / yt.sum() + (~hat & ~yt).sum() / (~yt).sum()))
    return np.array(out)


def count_vectors(pi, k):
    """Every count vector n (n_c negatives of class c, Σ n = k) with its multinomial
    probability under class shares pi: the enumeration the collapsed objectives sum over."""
    import itertools
    import math

    for n in itertools.product(range(k + 1), repeat=len(pi)):
        if sum(n) == k:
            prob = math.factorial(k) / math.prod(math.factorial(x) for x in n)
            yield n, prob * math.prod(p**x for p, x in zip(pi, n))


def random_gram(rng, C):
    """A random Gram matrix of unit vectors in R^C."""
    V = rng.standard_normal((C, C))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    G = V @ V.T
    np.fill_diagonal(G, 1.0)
    return G
