"""FLR's factorised latent head (FLR paper §4.1, eq. 2-8), behind the same interface as LatentRATT.

K learnable query prototypes Q_f [K, d] attend over the backbone's final-norm hidden states H [L, d]:

    A_k = softmax_j( (W_q Q_f)_k . RoPE(W_k H)_j / sqrt(d) )     over the real positions j   (eq. 2)
    F_k = sum_j A_kj (W_v H)_j                                    K factor representations    (eq. 3)
    alpha = softmax(MLP(flatten(F)));  z = sum_k alpha_k F_k      the thought                 (eq. 4)

and the regularisers of the factors (eq. 5-7), each weighted by a learned uncertainty weight
lambda_i = 1 / (2 exp(s_i)) with s_i = 0 at the start, plus s_i / 2 (Kendall et al. 2018):

    orthogonality  ||F^ F^T - I||_F^2,        F^ = row-normalised factors                     (eq. 5)
    diversity      mean_{k<l} cos(A_k, A_l),  the K attention maps over positions              (eq. 6)
    sparsity       H(alpha) = -sum_k alpha_k log alpha_k                                        (eq. 7)

FLR's T refinement iterations (the thought slot rewritten T times) are an option of the reasoner
(`LatentReasoner(refine_steps=T)`), not of the head: the head maps hidden states to one thought, and
the reasoner decides what it is run over. Every choice the paper leaves open is in docs/flr.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentrec.llm.heads import LatentHead, rope
from latentrec.llm.precision import upcast, wide_einsum

REGULARISERS = ("orthogonality", "diversity", "sparsity")


def orthogonality_loss(factors: torch.Tensor) -> torch.Tensor:
    """||F^ F^T - I||_F^2 per row [B] of factors [B, K, d] (F^ row-normalised): twice the sum of the
    squared cosines of the K(K-1)/2 factor pairs."""
    f = nn.functional.normalize(upcast(factors), dim=-1)
    gram = wide_einsum("bkd,bld->bkl", f, f)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return ((gram - eye) ** 2).sum((1, 2))


def pairwise_cosine(maps: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the K(K-1)/2 pairs of maps [B, K, L] -> [B] (0 when K = 1)."""
    k = maps.shape[1]
    if k < 2:
        return maps.new_zeros(maps.shape[0], dtype=torch.float32)
    m = nn.functional.normalize(upcast(maps), dim=-1)
    cos = wide_einsum("bkl,bjl->bkj", m, m)
    off = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(-1)
    return off / (k * (k - 1))


def entropy(alpha: torch.Tensor) -> torch.Tensor:
    """-sum_k alpha_k log alpha_k per row [B] (0 log 0 = 0)."""
    a = upcast(alpha)
    return -(a * torch.log(a.clamp_min(1e-12))).sum(-1)


class FLRHead(LatentHead):
    """FLR's multi-factor attention (eq. 2-4) and its uncertainty-weighted regularisers (eq. 5-7).

    Options (config `llm.latent.<recipe>.head_options`):
      n_factors        K (the paper: 3 on CDs, 4 on the other datasets; Figure 8 sweeps 1-4)
      rope_base        RoPE base on the keys (LatentRATT's 1000)
      rope_query       also rotate the query at the thought's position, making scores depend on relative
                       offsets as in LatentRATT (False: the paper's RoPE(W_k H) only)
      gate_hidden      width of the gate MLP K*d -> gate_hidden -> K (GELU); None = d
      init_std         N(0, init_std) for the linear weights (biases 0), as LatentRATT
      prototype_std    N(0, prototype_std) for the prototypes Q_f (the scale of final-norm hidden states)
      orthogonality, diversity, sparsity   each regulariser on/off (FLR Table 3's 8 combinations)
      learn_weights    learn s_i (Kendall); False: fixed lambda_i = 1/2 (s_i = 0), no s_i/2 term
    """

    kind = "flr"

    def __init__(
        self,
        hidden_size: int,
        n_factors: int = 4,
        rope_base: float = 1000.0,
        rope_query: bool = False,
        gate_hidden: int | None = None,
        init_std: float = 0.02,
        prototype_std: float = 1.0,
        orthogonality: bool = True,
        diversity: bool = True,
        sparsity: bool = True,
        learn_weights: bool = True,
    ):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"RoPE needs an even hidden size, got {hidden_size}")
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        self.hidden_size, self.n_factors, self.rope_base, self.rope_query = (
            hidden_size,
            n_factors,
            rope_base,
            rope_query,
        )
        self.gate_hidden = gate_hidden or hidden_size
        self.init_std, self.prototype_std, self.learn_weights = init_std, prototype_std, learn_weights
        self.enabled = tuple(name for name, on in zip(REGULARISERS, (orthogonality, diversity, sparsity)) if on)
        d, k = hidden_size, n_factors
        self.prototypes = nn.Parameter(torch.randn(k, d) * prototype_std)
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        self.gate = nn.Sequential(nn.Linear(k * d, self.gate_hidden), nn.GELU(), nn.Linear(self.gate_hidden, k))
        for lin in (self.q, self.k, self.v, self.gate[0], self.gate[2]):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        # Only the enabled regularisers own an s_i (an unused parameter would break DDP).
        self.log_vars = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(())) for name in self.enabled} if learn_weights else {}
        )
        self._raw: list[dict[str, torch.Tensor]] = []
        self.last: dict[str, torch.Tensor] = {}

    def config(self) -> dict:
        return {
            "hidden_size": self.hidden_size,
            "n_factors": self.n_factors,
            "rope_base": self.rope_base,
            "rope_query": self.rope_query,
            "gate_hidden": self.gate_hidden,
            "init_std": self.init_std,
            "prototype_std": self.prototype_std,
            "learn_weights": self.learn_weights,
            **{name: name in self.enabled for name in REGULARISERS},
        }

    # -- forward --------------------------------------------------------------------------------------
    def factorise(self, hidden, mask, positions):
        """(factors F [B, K, d], attention A [B, K, L] fp32, gate alpha [B, K] fp32)."""
        h = hidden.to(self.q.weight.dtype).masked_fill(mask[..., None] == 0, 0)
        b = h.shape[0]
        q = self.q(self.prototypes).expand(b, -1, -1)  # [B, K, d]
        if self.rope_query:  # the query sits at the thought's position (the last real position)
            q = rope(q, positions[:, -1:].expand(-1, self.n_factors), self.rope_base)
        keys = rope(self.k(h), positions, self.rope_base)  # [B, L, d]
        scores = wide_einsum("bkd,bld->bkl", q, keys) / math.sqrt(self.hidden_size)
        attn = scores.masked_fill(mask[:, None] == 0, float("-inf")).softmax(-1)
        factors = torch.einsum("bkl,bld->bkd", attn.to(h.dtype), self.v(h))
        alpha = upcast(self.gate(factors.flatten(1))).softmax(-1)
        return factors, attn, alpha

    def forward(self, hidden, mask, positions):
        factors, attn, alpha = self.factorise(hidden, mask, positions)
        z = torch.einsum("bk,bkd->bd", alpha.to(factors.dtype), factors)
        raw = {}
        if "orthogonality" in self.enabled:
            raw["orthogonality"] = orthogonality_loss(factors).mean()
        if "diversity" in self.enabled:
            raw["diversity"] = pairwise_cosine(attn).mean()
        if "sparsity" in self.enabled:
            raw["sparsity"] = entropy(alpha).mean()
        self._raw.append(raw)
        self.last = {"factors": factors.detach(), "attention": attn.detach(), "alpha": alpha.detach()}
        return z

    # -- regularisers -----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._raw = []

    def __getstate__(self):
        """Copies and pickles leave the last forward's graph-holding values behind (deepcopy of a head with
        them would fail: the KL reference is a deepcopy)."""
        state = self.__dict__.copy()
        state["_raw"], state["last"] = [], {}
        return state

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.log_vars.values())

    def raw_regularisers(self) -> dict[str, torch.Tensor]:
        """Unweighted regularisers, averaged over the head calls since the last reset (the reasoner resets
        at the start of each thought computation, so: over the T refinements of every latent)."""
        if not self._raw:
            return {}
        return {name: torch.stack([r[name] for r in self._raw]).mean() for name in self.enabled}

    def weights(self) -> dict[str, torch.Tensor]:
        """lambda_i = 1 / (2 exp(s_i))."""
        if not self.learn_weights:
            return {name: torch.tensor(0.5) for name in self.enabled}
        return {name: 0.5 * torch.exp(-s) for name, s in self.log_vars.items()}

    def regularisers(self) -> dict[str, torch.Tensor]:
        """lambda_i L_i + s_i / 2 for each enabled regulariser (the +s_i/2 keeps s_i from running to +inf,
        which would switch the regulariser off); {} before any forward."""
        raw = self.raw_regularisers()
        if not self.learn_weights:
            return {name: 0.5 * value for name, value in raw.items()}
        return {
            name: 0.5 * torch.exp(-self.log_vars[name]) * value + 0.5 * self.log_vars[name]
            for name, value in raw.items()
        }
