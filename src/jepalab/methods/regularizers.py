"""Anti-collapse regularisers of embeddings: SIGReg (LeJEPA) and VICReg's variance/covariance.

A JEPA trained without an EMA target (``method.target=online``) can reach zero prediction
loss by mapping everything to a constant: nothing but the target network's lag prevents it.
A regulariser of the encoder's embeddings ``z`` of shape ``(N, D)`` rules that solution out
instead; the method's loss becomes ``(1 - λ) * prediction + λ * regulariser``
(LeJEPA, Eq. 10).

**SIGReg** [0] (Sketched Isotropic Gaussian Regularisation) pushes ``z`` towards the isotropic
Gaussian ``N(0, I)``: ``z`` is projected on ``M`` random unit directions ``a_m``, and each
1-D projection ``x = z a_m`` is compared with ``N(0, 1)`` by the Epps--Pulley statistic [1]

    EP(x) = N * ∫ |φ_N(t) - e^{-t²/2}|² w(t) dt,   φ_N(t) = (1/N) Σ_n e^{i t x_n},
    w(t) = e^{-t²/2},

with ``φ_N`` the empirical characteristic function. The integrand is even in ``t``
(``φ_N(-t)`` is the conjugate of ``φ_N(t)``), so the integral over the real line is twice the
trapezoid rule on ``[0, t_max]`` (LeJEPA's ``EppsPulley``: ``t_max=3``, 17 knots). SIGReg is
the mean of ``EP`` over the ``M`` directions (LeJEPA's minimal code: 256 slices), redrawn at
every step. The directions are drawn from a CPU generator seeded by ``(seed, step)``: every
rank of a distributed run draws the same ones, and a resumed run draws the ones it would have
drawn. Under ``N(0, 1)`` the expected statistic is O(1) whatever ``N``; a collapsed,
shifted or rescaled sample gives a value that grows with ``N``.

**VICReg** [2] variance and covariance terms: a hinge ``mean_j max(0, γ - sqrt(Var z_j + ε))``
on every dimension's standard deviation, plus ``Σ_{i≠j} C_ij² / D`` over the off-diagonal
entries of the covariance ``C`` (VICReg Eq. 1-4; the paper weighs invariance : variance :
covariance as 25 : 25 : 1).

**Distributed training.** Both statistics are functions of means over the *global* batch.
Each rank sums over its own rows; the sums (and the row counts) are summed across ranks with
the autograd-aware ``torch.distributed.nn.functional.all_reduce``, so the value on every rank
is the single-process value on the concatenated batch. Its backward sums the gradients of
all ranks, so each rank's gradient w.r.t. its own rows is ``world_size`` times the
single-process one; DDP *averages* gradients over ranks, which then yields exactly the
single-process gradient (an all-reduce that does not sum in its backward gives gradients
``1 / world_size`` too small). SIGReg reduces the ECF's cosine and sine sums ``(M, K)``;
VICReg the feature sum ``(D,)`` and then the centred cross-product sum ``(D, D)``. Without an
initialised process group (or with one rank) nothing is communicated.

[0] Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
    the Heuristics", Sec. 4 (SIGReg, Eq. 7-9) and the minimal implementation of its Fig. 4.
[1] Epps & Pulley 1983, "A test for normality based on the empirical characteristic function".
[2] Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", Sec. 3.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from jepalab.data.sampling import mix_seed
from jepalab.registry import Registry
from jepalab.specs import records_arguments

# method.regularizer -> a builder ``(seed, knobs) -> module | None``
REGULARIZERS: Registry = Registry("regularizer", key="method.regularizer")
REGULARIZE_ON = ("tokens", "pooled")  # which embeddings a method regularises (its docstring)
# λ of ``(1 - λ) * prediction + λ * regulariser`` when ``method.regularizer_weight`` is unset:
# LeJEPA's default 0.05 (Sec. 6); 0.5 keeps VICReg's 25 : 25 invariance : variance ratio.
DEFAULT_WEIGHTS = {"sigreg": 0.05, "vicreg": 0.5}

_SLICES_TAG = 0x73696772  # "sigr": keeps the direction stream apart from other seeded draws


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(x: Tensor) -> Tensor:
    """``x`` summed over the ranks of the default process group, differentiably.

    The backward sums the incoming gradients over ranks too (see the module docstring: what
    makes DDP's averaged gradient equal the single-process one). Identity when
    ``torch.distributed`` is not initialised.
    """
    if not _distributed():
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


def global_count(n: int, device: torch.device) -> int:
    """The number of rows over all ranks (``n`` rows on this one)."""
    if not _distributed():
        return n
    count = torch.tensor([n], dtype=torch.float64, device=device)
    dist.all_reduce(count)
    return int(count.item())


def _at_least_fp32(z: Tensor) -> Tensor:
    """fp32 for half/bfloat16 inputs (cos/sin of large arguments lose everything in bf16)."""
    return z if z.dtype == torch.float64 else z.float()


def random_directions(
    dim: int,
    num_slices: int,
    seed: int,
    step: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(dim, num_slices)`` unit column vectors, a pure function of ``(seed, step)``.

    Drawn in float64 on the CPU (so identical on every device and rank), then moved.
    """
    g = torch.Generator().manual_seed(mix_seed(seed, step, _SLICES_TAG))
    a = torch.randn(dim, num_slices, generator=g, dtype=torch.float64)
    return (a / a.norm(dim=0, keepdim=True)).to(device=device, dtype=dtype)


@records_arguments
class SIGReg(nn.Module):
    """Sketched isotropic Gaussian regulariser (LeJEPA [0], Eq. 7-9): the Epps--Pulley
    statistic of ``num_slices`` random 1-D projections against ``N(0, 1)``, averaged.

    Args:
        num_slices: random directions per step ``M`` (LeJEPA: 256; 1024 for large ``D``).
        num_knots: trapezoid knots on ``[0, t_max]`` (LeJEPA: 17).
        t_max: end of the integration grid (LeJEPA: 3; ``w(t) = e^{-t²/2}`` is ~1e-2 there).
        seed: with the step, seeds the directions.

    Call as ``sigreg(z, step)`` with ``z`` of shape ``(N, D)``; returns ``(value, metrics)``
    with ``value`` a scalar (computed in fp32, or fp64 for fp64 inputs) and
    ``metrics = {"sigreg": value.detach()}``.
    """

    def __init__(
        self, num_slices: int = 256, num_knots: int = 17, t_max: float = 3.0, seed: int = 0
    ) -> None:
        super().__init__()
        if num_slices < 1 or num_knots < 2 or t_max <= 0:
            raise ValueError(
                f"SIGReg needs method.sigreg_slices >= 1, method.sigreg_knots >= 2 and "
                f"method.sigreg_t_max > 0; got {num_slices}, {num_knots}, {t_max}"
            )
        self.num_slices, self.seed = int(num_slices), int(seed)
        t = torch.linspace(0.0, t_max, num_knots, dtype=torch.float64)
        gauss_cf = torch.exp(-0.5 * t.square())  # φ of N(0, 1), also the weight w(t)
        # trapezoid weights on [0, t_max], doubled for the even integrand's [-t_max, 0] half
        dt = t_max / (num_knots - 1)
        trapezoid = torch.full_like(t, 2 * dt)
        trapezoid[[0, -1]] = dt
        # non-persistent: the method's state_dict (and checkpoints) stay as without SIGReg
        self.register_buffer("t", t.float(), persistent=False)
        self.register_buffer("gauss_cf", gauss_cf.float(), persistent=False)
        self.register_buffer("weights", (trapezoid * gauss_cf).float(), persistent=False)

    def epps_pulley(self, x: Tensor) -> Tensor:
        """Epps--Pulley statistic of each column of ``x`` ``(N, M)`` against ``N(0, 1)``,
        over the global batch: ``(M,)``."""
        x = _at_least_fp32(x)
        xt = x.unsqueeze(-1) * self.t.to(x.dtype)  # (N, M, K)
        n = global_count(x.shape[0], x.device)
        cos_mean = global_sum(torch.cos(xt).sum(0)) / n  # real part of φ_N, (M, K)
        sin_mean = global_sum(torch.sin(xt).sum(0)) / n  # imaginary part
        err = (cos_mean - self.gauss_cf.to(x.dtype)).square() + sin_mean.square()
        return n * (err @ self.weights.to(x.dtype))

    def forward(self, z: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        if z.ndim != 2:
            raise ValueError(f"SIGReg expects (N, D) embeddings, got shape {tuple(z.shape)}")
        z = _at_least_fp32(z)
        a = random_directions(z.shape[1], self.num_slices, self.seed, step, z.device, z.dtype)
        value = self.epps_pulley(z @ a).mean()
        return value, {"sigreg": value.detach()}


@records_arguments
class VICRegTerms(nn.Module):
    """VICReg's variance and covariance terms [2] (Eq. 1-4), over the global batch.

    Args:
        std_target: ``γ``, the standard deviation below which the hinge acts (VICReg: 1).
        variance_weight: weight of the variance term (VICReg ``μ`` relative to invariance: 1).
        covariance_weight: weight of the covariance term (VICReg ``ν / λ``: 1 / 25).
        eps: added to the variance before the square root (VICReg: 1e-4).

    Call as ``vicreg(z, step)`` with ``z`` of shape ``(N, D)``, ``N >= 2``; returns
    ``(variance_weight * v + covariance_weight * c, {"vicreg_variance": v,
    "vicreg_covariance": c})``. ``step`` is unused (no randomness).
    """

    def __init__(
        self,
        std_target: float = 1.0,
        variance_weight: float = 1.0,
        covariance_weight: float = 0.04,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.std_target, self.eps = float(std_target), float(eps)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)

    def covariance(self, z: Tensor) -> Tensor:
        """Unbiased ``(D, D)`` covariance of the rows of ``z`` over the global batch."""
        z = _at_least_fp32(z)
        n = global_count(z.shape[0], z.device)
        if n < 2:
            raise ValueError(f"VICReg's covariance needs at least 2 embeddings, got {n}")
        mean = global_sum(z.sum(0)) / n
        centred = z - mean  # centring first keeps the sum of products well conditioned
        return global_sum(centred.T @ centred) / (n - 1)

    def forward(self, z: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        if z.ndim != 2:
            raise ValueError(f"VICReg expects (N, D) embeddings, got shape {tuple(z.shape)}")
        cov = self.covariance(z)
        d = cov.shape[0]
        variance = torch.relu(self.std_target - torch.sqrt(cov.diagonal() + self.eps)).mean()
        covariance = (cov.square().sum() - cov.diagonal().square().sum()) / d
        value = self.variance_weight * variance + self.covariance_weight * covariance
        terms = {"vicreg_variance": variance.detach(), "vicreg_covariance": covariance.detach()}
        return value, terms


def build_regularizer(name: str, seed: int = 0, **knobs: float) -> nn.Module | None:
    """The regulariser registered as ``name`` (:data:`REGULARIZERS`), ``None`` for ``"none"``.

    ``knobs``: ``sigreg_slices``, ``sigreg_knots``, ``sigreg_t_max``, ``vicreg_std_target``,
    ``vicreg_variance_weight``, ``vicreg_covariance_weight`` (the ``method.*`` config keys);
    those of the other regulariser are ignored.
    """
    return REGULARIZERS.get(name)(seed, knobs)


@REGULARIZERS.register("none")
def _no_regularizer(seed: int, knobs: dict[str, float]) -> None:
    return None


@REGULARIZERS.register("sigreg")
def _sigreg(seed: int, knobs: dict[str, float]) -> SIGReg:
    return SIGReg(
        num_slices=int(knobs.get("sigreg_slices", 256)),
        num_knots=int(knobs.get("sigreg_knots", 17)),
        t_max=float(knobs.get("sigreg_t_max", 3.0)),
        seed=seed,
    )


@REGULARIZERS.register("vicreg")
def _vicreg(seed: int, knobs: dict[str, float]) -> VICRegTerms:
    return VICRegTerms(
        std_target=float(knobs.get("vicreg_std_target", 1.0)),
        variance_weight=float(knobs.get("vicreg_variance_weight", 1.0)),
        covariance_weight=float(knobs.get("vicreg_covariance_weight", 0.04)),
    )


def regularizer_weight(name: str, weight: float | None) -> float:
    """``λ`` for ``name``: ``weight`` if given (in ``[0, 1)``), else :data:`DEFAULT_WEIGHTS`."""
    if weight is None:
        return DEFAULT_WEIGHTS.get(name, 0.0)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"method.regularizer_weight must be in [0, 1), got {weight}")
    return float(weight)


def pooled(tokens: Tensor, seq_ids: Tensor, num_seqs: int) -> Tensor:
    """Mean of packed ``(T, D)`` tokens per sequence (``seq_ids`` ``(T,)``): ``(num_seqs, D)``."""
    sums = tokens.new_zeros(num_seqs, tokens.shape[-1]).index_add(0, seq_ids, tokens)
    counts = torch.bincount(seq_ids, minlength=num_seqs).clamp_min(1).to(tokens.dtype)
    return sums / counts[:, None]


__all__ = [
    "DEFAULT_WEIGHTS",
    "REGULARIZERS",
    "REGULARIZE_ON",
    "SIGReg",
    "VICRegTerms",
    "build_regularizer",
    "global_count",
    "global_sum",
    "pooled",
    "random_directions",
    "regularizer_weight",
]
