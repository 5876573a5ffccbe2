"""The formulas of SPEC.md §2 written out literally, one sample and one index at a time.

Independent of the library's batched einsum/FFT code: dense circ(X), explicit block grids,
explicit masks. Slow; for tiny sizes only.
"""

from __future__ import annotations

import numpy as np


def circ(X, grid):
    """circ(X)[t, (u, k)] = X[t ⊕ u, k] on an h×w grid, row-major; (s, s·d)."""
    h, w = grid
    s, d = X.shape
    out = np.zeros((s, s * d))
    for t in range(s):
        for u in range(s):
            r = ((t // w) + (u // w)) % h
            q = ((t % w) + (u % w)) % w
            out[t, u * d:(u + 1) * d] = X[r * w + q]
    return out


def relu_mask(values):
    return (values >= 0).astype(float)


# ---------------------------------------------------------------- convex outputs
def mlp(X, Z, gates=None):
    """O = X Z, or Σ_j D_j X Z_j with D_j = diag(1{X h_j ≥ 0})."""
    if gates is None:
        return X @ Z[0]
    return sum(relu_mask(X @ h)[:, None] * (X @ Zj) for h, Zj in zip(gates, Z))


def attention(X, Z, gates=None):
    """Row a of O = Σ_j Σ_{k,l} Γ_{j,a}[k,l] x_aᵀ Z_j^{(k,l)}; Z_j^{(k,l)} the (k,l) block of a
    d×d grid of d×c blocks; linear: Γ_a = G = XᵀX/s for every query a."""
    s, d = X.shape
    c = Z.shape[2] // d
    out = np.zeros((s, c))
    masks = [np.ones((s, s))] if gates is None else [relu_mask(X @ H @ X.T) for H in gates]
    for M, Zj in zip(masks, Z):
        for a in range(s):
            gamma = sum(M[a, t] * np.outer(X[t], X[t]) for t in range(s)) / s
            for k in range(d):
                for l in range(d):
                    block = Zj[k * d:(k + 1) * d, l * c:(l + 1) * c]
                    out[a] += gamma[k, l] * X[a] @ block
    return out


def mixer(X, Z, gates=None):
    """O[a,o] = Σ_j Σ_{t,k} D_j[a,k] X[t,k] Z_j[(a,t),(k,o)], D_j = 1{H_j X ≥ 0} (or all ones)."""
    s, d = X.shape
    c = Z.shape[2] // d
    masks = [np.ones((s, d))] if gates is None else [relu_mask(H @ X) for H in gates]
    out = np.zeros((s, c))
    for D, Zj in zip(masks, Z):
        for a in range(s):
            for t in range(s):
                for k in range(d):
                    out[a] += D[a, k] * X[t, k] * Zj[a * s + t, k * c:(k + 1) * c]
    return out


def block_fno(X, Z, grid, groups, gates=None):
    """Per group b (contiguous features and outputs): Σ_j D_{b,j} circ(X^{(b)}) Z_{b,j}, with
    D_{b,j} = diag(1{circ(X^{(b)}) vec(h_{b,j}) ≥ 0}); blocks ordered b·m + j."""
    s, d = X.shape
    B = groups
    J = Z.shape[0] // B
    parts = []
    for b in range(B):
        Cb = circ(X[:, b * d // B:(b + 1) * d // B], grid)  # (s, s·d/B)
        part = 0
        for j in range(J):
            Zbj = Z[b * J + j]
            mask = 1.0 if gates is None else relu_mask(Cb @ gates[b, j].reshape(-1))[:, None]
            part = part + mask * (Cb @ Zbj)
        parts.append(part)
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------- pair contributions (SPEC.md §7)
# C (s, s, c): C[a, t] is what source token t adds to the output of token a; Σ_t C[a, t] = O[a].
def mlp_pairs(X, Z, gates=None):
    """Diagonal: C[a, a] = row a of the MLP output (O[a] depends on x_a only)."""
    s = X.shape[0]
    O = mlp(X, Z, gates)
    out = np.zeros((s, s, O.shape[1]))
    for a in range(s):
        out[a, a] = O[a]
    return out


def attention_pairs(X, Z, gates=None):
    """C[a,t,:] = (1/s) Σ_j M_j[a,t] Σ_{k,l} x_t[k] x_t[l] x_aᵀ Z_j^{(k,l)},
    M_j[a,t] = 1{x_aᵀ H_j x_t ≥ 0} (all ones when linear)."""
    s, d = X.shape
    c = Z.shape[2] // d
    out = np.zeros((s, s, c))
    for j, Zj in enumerate(Z):
        for a in range(s):
            for t in range(s):
                if gates is None:
                    m = 1.0
                else:
                    score = sum(X[a, k] * gates[j][k, l] * X[t, l]
                                for k in range(d) for l in range(d))
                    m = 1.0 if score >= 0 else 0.0
                for k in range(d):
                    for l in range(d):
                        block = Zj[k * d:(k + 1) * d, l * c:(l + 1) * c]
                        out[a, t] += m * X[t, k] * X[t, l] * (X[a] @ block) / s
    return out


def mixer_pairs(X, Z, gates=None):
    """C[a,t,o] = Σ_j Σ_k D_j[a,k] X[t,k] Z_j[a·s+t, k·c+o], D_j = 1{H_j X ≥ 0} (ones when
    linear)."""
    s, d = X.shape
    c = Z.shape[2] // d
    out = np.zeros((s, s, c))
    for j, Zj in enumerate(Z):
        for a in range(s):
            for k in range(d):
                if gates is None:
                    on = 1.0
                else:
                    on = 1.0 if sum(gates[j][a, t] * X[t, k] for t in range(s)) >= 0 else 0.0
                for t in range(s):
                    for o in range(c):
                        out[a, t, o] += on * X[t, k] * Zj[a * s + t, k * c + o]
    return out


def block_fno_pairs(X, Z, grid, groups, gates=None):
    """t = a ⊕ u on the h×w torus (row-major), C[a,t,(b,o)] =
    Σ_j D_{b,j}[a] Σ_{k∈b} X[t,k] Z_{b,j}[u·(d/B) + k_local, o] with u = t ⊖ a; outputs grouped
    contiguously by b, blocks ordered b·m + j, D_{b,j} = 1{circ(X^{(b)}) vec(h_{b,j}) ≥ 0}."""
    h, w = grid
    s, d = X.shape
    B = groups
    J = Z.shape[0] // B
    dB = d // B
    cB = Z.shape[2]
    out = np.zeros((s, s, B * cB))
    for b in range(B):
        Xb = X[:, b * dB:(b + 1) * dB]
        for j in range(J):
            Zbj = Z[b * J + j]
            for a in range(s):
                ra, qa = a // w, a % w
                if gates is None:
                    on = 1.0
                else:
                    # row a of circ(X^{(b)}) vec(h): Σ_{u,k} X^{(b)}[a ⊕ u, k] h[u, k]
                    value = 0.0
                    for u in range(s):
                        t = ((ra + u // w) % h) * w + (qa + u % w) % w
                        for k in range(dB):
                            value += Xb[t, k] * gates[b, j][u, k]
                    on = 1.0 if value >= 0 else 0.0
                for t in range(s):
                    rt, qt = t // w, t % w
                    u = ((rt - ra) % h) * w + (qt - qa) % w  # t ⊖ a
                    for k in range(dB):
                        for o in range(cB):
                            out[a, t, b * cB + o] += on * Xb[t, k] * Zbj[u * dB + k, o]
    return out


def pairs(head, X, Z):
    """The literal pair contributions (s, s, c) of a bound head for one sample X (s, d)."""
    gates = None if not head.gated else head.gates.numpy()
    if head.name == "mlp":
        return mlp_pairs(X, Z, gates)
    if head.name == "attention":
        return attention_pairs(X, Z, gates)
    if head.name == "mixer":
        return mixer_pairs(X, Z, gates)
    groups = head.groups
    if gates is not None:
        gates = gates.reshape(groups, -1, *gates.shape[-2:])  # FNO gates (m,s,d) → (1,m,s,d)
    return block_fno_pairs(X, Z, head.grid, groups, gates)


# ---------------------------------------------------------------- networks
def mlp_network(X, W1, W2, gates=None):
    """Σ_j Σ_{r∈j} (D_j X w1_r) w2_rᵀ."""
    out = 0
    for j in range(W1.shape[0]):
        mask = 1.0 if gates is None else relu_mask(X @ gates[j])[:, None]
        for r in range(W1.shape[1]):
            out = out + mask * np.outer(X @ W1[j, r], W2[j, r])
    return out


def attention_network(X, W1, W2, gates=None):
    """Σ_j Σ_{r∈j} ((M_j ⊙ X W1_r Xᵀ) / s) X W2_r."""
    s = X.shape[0]
    out = 0
    for j in range(W1.shape[0]):
        M = 1.0 if gates is None else relu_mask(X @ gates[j] @ X.T)
        for r in range(W1.shape[1]):
            out = out + (M * (X @ W1[j, r] @ X.T)) / s @ X @ W2[j, r]
    return out


def mixer_network(X, W1, W2, gates=None):
    """Σ_j Σ_{r∈j} (D_j ⊙ (W1_r X)) W2_r."""
    out = 0
    for j in range(W1.shape[0]):
        D = 1.0 if gates is None else relu_mask(gates[j] @ X)
        for r in range(W1.shape[1]):
            out = out + (D * (W1[j, r] @ X)) @ W2[j, r]
    return out


def block_fno_network(X, W1, W2, grid, groups, gates=None):
    """Per group: Σ_j Σ_{r∈j} D_{b,j} (circ(X^{(b)}) vec(w1_r)) w2_rᵀ."""
    s, d = X.shape
    B = groups
    J = W1.shape[0] // B
    parts = []
    for b in range(B):
        Cb = circ(X[:, b * d // B:(b + 1) * d // B], grid)
        part = 0
        for j in range(J):
            mask = 1.0 if gates is None else relu_mask(Cb @ gates[b, j].reshape(-1))[:, None]
            for r in range(W1.shape[1]):
                part = part + mask * np.outer(Cb @ W1[b * J + j, r].reshape(-1),
                                              W2[b * J + j, r])
        parts.append(part)
    return np.concatenate(parts, axis=1)


def convex(head, X, Z):
    """The literal convex output of a bound head for one sample X (s, d)."""
    gates = None if not head.gated else head.gates.numpy()
    if head.name == "mlp":
        return mlp(X, Z, gates)
    if head.name == "attention":
        return attention(X, Z, gates)
    if head.name == "mixer":
        return mixer(X, Z, gates)
    groups = head.groups
    if gates is not None:
        gates = gates.reshape(groups, -1, *gates.shape[-2:])  # FNO gates (m,s,d) → (1,m,s,d)
    return block_fno(X, Z, head.grid, groups, gates)


def network(head, X, W1, W2):
    """The literal network output of a bound head for one sample X (s, d)."""
    gates = None if not head.gated else head.gates.numpy()
    if head.name == "mlp":
        return mlp_network(X, W1, W2, gates)
    if head.name == "attention":
        return attention_network(X, W1, W2, gates)
    if head.name == "mixer":
        return mixer_network(X, W1, W2, gates)
    groups = head.groups
    if gates is not None:
        gates = gates.reshape(groups, -1, *gates.shape[-2:])
    return block_fno_network(X, W1, W2, head.grid, groups, gates)
