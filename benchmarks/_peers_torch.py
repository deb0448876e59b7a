"""benchmarks/peers.py's PyTorch model for a stack of configs, and its check against jaxcl."""

from __future__ import annotations

import math


class Peer:
    """The model in PyTorch for a stack of B configs (B = 1: the per-config loop)."""

    def __init__(self, torch, resolved, M, p, w, seed=0, device="cpu"):
        """resolved: each config's resolved fields (dicts); M (B, d1, d), p (B, d) presence
        probabilities, w (B, m, d1) initial weights: numpy arrays; device: torch's name of
        the device every tensor lives on ("cuda" on a GPU)."""
        self.t = torch
        self.device = torch.device(device)
        r = resolved
        f = lambda key: torch.tensor(  # noqa: E731
            [x[key] for x in r], dtype=torch.float32, device=self.device
        )
        self.B, self.K, self.L, self.d, self.d1, self.m = (
            len(r),
            r[0]["K"],
            r[0]["L"],
            r[0]["d"],
            r[0]["d1"],
            r[0]["m"],
        )
        self.tau, self.lam, self.eta = f("tau")[:, None, None], f("lam"), f("eta")
        self.sigma, self.scale = f("sigma_xi"), f("feature_scale")
        self.c_b, self.bias_rate = f("c_b"), f("bias_rate")
        on = dict(dtype=torch.float32, device=self.device)
        self.M = torch.as_tensor(M, **on)  # (B, d1, d)
        self.p = torch.as_tensor(p, **on)  # (B, d)
        self.w = torch.as_tensor(w, **on)  # (B, m, d1)
        self.n2_0 = (self.w * self.w).sum(-1)
        self.b = torch.zeros(self.B, self.m, **on)
        self.stage = torch.ones(self.B, dtype=torch.int32, device=self.device)
        self.n2_T1 = torch.zeros(self.B, self.m, **on)
        self.g1 = torch.tensor(
            [(1 + x["eps_min"] * x["C_z"] * math.log(x["d"])) ** 2 for x in r], **on
        )
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    @classmethod
    def from_jaxcl(cls, torch, cfgs, states, device="cpu"):
        """The peer started from jaxcl's own M, W(0) and p_j (for the step benchmark)."""
        import numpy as np

        return cls(
            torch,
            [c.resolved() for c in cfgs],
            np.stack([np.asarray(s.M) for s in states]),
            np.stack([np.asarray(_presence(c)) for c in cfgs]),
            np.stack([np.asarray(s.w) for s in states]),
            device=device,
        )

    def batch(self):
        """K positive pairs per config: signed features, redrawn positions, fresh noise."""
        t, B, K, L, d, d1 = self.t, self.B, self.K, self.L, self.d, self.d1
        on = dict(generator=self.gen, device=self.device)
        u = t.rand(B, K, d, **on)
        coef = (
            t.where(
                u < self.p[:, None, :],
                t.where(t.rand(B, K, d, **on) < 0.5, 1.0, -1.0),
                0.0,
            )
            * self.scale[:, None, None]
        )
        views = []
        for _ in range(2):
            pos = t.randint(L, (B, K, d), **on)
            z = coef[:, :, None, :] * t.nn.functional.one_hot(pos, L).permute(0, 1, 3, 2)
            x = t.einsum("bkld,bed->bkle", z, self.M)
            views.append(x + self.sigma[:, None, None, None] * t.randn(B, K, L, d1, **on))
        return views

    def loss(self, w, b, xa, xb):
        """Mean InfoNCE (eq. 1) per config, summed over configs (each config's gradient is its
        own); returns (sum, per-config losses)."""
        t = self.t
        fa = _encode(t, w, b, xa)
        with t.no_grad():
            fb = _encode(t, w, b, xb)
        s = t.bmm(fa, fb.transpose(1, 2)) / self.tau  # (B, K, K)
        per = (t.logsumexp(s, dim=2) - t.diagonal(s, dim1=1, dim2=2)).mean(1)
        return per.sum(), per

    def step(self, xa, xb):
        t = self.t
        w = self.w.detach().requires_grad_(True)
        total, _ = self.loss(w, self.b, xa, xb)
        (g,) = t.autograd.grad(total, w)
        with t.no_grad():
            w_new = self.w - self.eta[:, None, None] * (g + self.lam[:, None, None] * self.w)
            self._bias(w_new)
            self.w = w_new

    def _bias(self, w_new):
        """The staged bias schedule of jaxcl.experiments.liao.train.update_bias."""
        t = self.t
        log_d = math.log(self.d)
        n2_old, n2_new = (self.w * self.w).sum(-1), (w_new * w_new).sum(-1)
        growth = t.sqrt(n2_new / n2_old.clamp_min(1e-30))
        enter2 = (self.stage == 1) & (n2_new >= self.g1[:, None] * self.n2_0).all(1)
        enter3 = (self.stage == 2) & (n2_new >= self.d * self.n2_T1).any(1)
        b_T1 = self.c_b[:, None] * math.sqrt(log_d / self.d) * t.sqrt(n2_new)
        b2 = t.maximum(self.b * (1 + self.bias_rate[:, None]), self.b * growth)
        s1, s2 = (self.stage == 1)[:, None], (self.stage == 2)[:, None]
        self.b = t.where(s1, t.where(enter2[:, None], b_T1, 0.0), t.where(s2, b2, self.b * growth))
        self.n2_T1 = t.where(enter2[:, None], n2_new, self.n2_T1)
        self.stage = self.stage + enter2.int() + enter3.int()


def _encode(t, w, b, x):
    """Identity attention, then Σ_r BReLU_b(⟨w_i, H_r⟩) (SPEC §2): x (B, K, L, d1) -> (B, K, m)."""
    d1 = x.shape[-1]
    a = t.softmax(t.einsum("bkld,bkrd->bklr", x, x) / math.sqrt(d1), dim=-1)
    h = t.einsum("bklr,bkrd->bkld", a, x)
    pre = t.einsum("bkld,bmd->bklm", h, w)
    bb = b[:, None, None, :]
    return (t.relu(pre - bb) - t.relu(-pre - bb)).sum(2)


def _presence(cfg):
    from jaxcl.experiments.liao.data import frequencies, presence_prob

    r = cfg.resolved()
    return presence_prob(
        frequencies(r["d"], r["n_major"], r["eps_max"], r["eps_min"]), r["C_z"], r["d"]
    )


def check(torch, cfg, state, xa, xb, device="cpu") -> dict:
    """A peer's loss and W-gradient against jaxcl's info_nce and jax.grad, on one jaxcl batch
    (jax at jaxcl's matmul precision, torch at its default float32 matmuls)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcl
    from jaxcl.engine import precision

    r = cfg.resolved()
    w = state.w * 30.0  # grown weights and a positive bias: the BReLU's every branch is active
    b = jnp.full((r["m"],), 0.01)
    with precision.scope():
        lj, gj = jax.value_and_grad(lambda w_: jaxcl.info_nce(w_, b, xa, xb, r["tau"], 0.0))(w)
    peer = Peer.from_jaxcl(torch, [cfg], [state], device=device)

    def tensor(x):
        return torch.tensor(np.asarray(x), device=peer.device)[None]

    wt = tensor(w).requires_grad_(True)
    total, _ = peer.loss(wt, tensor(b), tensor(xa), tensor(xb))
    (gt,) = torch.autograd.grad(total, wt)
    gt = gt[0].cpu().numpy()
    total = total.item()
    return {
        "loss_jaxcl": float(lj),
        "loss_torch": total,
        "loss_rel_diff": abs(total - float(lj)) / abs(float(lj)),
        "grad_rel_diff": float(np.max(np.abs(gt - np.asarray(gj))) / np.max(np.abs(gj))),
    }
