"""The built-in losses: cross_entropy, importance_sampling, ppo, cispo, dro.

Every loss is token-level and summed over tokens and datums (no length normalisation). Notation,
per token t: logp_t = learner log-probability of target_tokens[t], logq_t = the sampler's
(`logprobs` input), r_t = exp(logp_t - logq_t), A_t = advantages[t], w_t = weights[t].

    cross_entropy        -sum w·logp
    importance_sampling  -sum w·r·A
    ppo                  -sum w·min(r·A, clip(r, lo, hi)·A)
    cispo                -sum w·sg(c(r))·logp·A        c = soft clip of the ratio, see below
    dro                  -sum w·(logp·A - ½·beta·(logp - logq)²)

`weights` (or `mask`) is optional on the RL losses; without it w_t = 1 where A_t != 0 and 0
elsewhere, so prompt tokens (advantage 0) never train. One advantage per datum (length 1) is
broadcast over the datum's weighted tokens (all tokens when there are no weights).

CISPO soft clip. With d = logp - logq (the log-ratio, detached) and bounds a = log lo, b = log hi:

    soft_clamp(d) = a + sp(d - a) - sp(d - b),   sp(x) = log(1 + exp(beta·x)) / beta
    c(r) = exp(soft_clamp(d))

soft_clamp is smooth, increasing and stays inside (a, b); as beta grows it tends to
clamp(d, a, b), and beta = inf is exactly the hard clip clamp(r, lo, hi) of Tinker's CISPO.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mint_rl.errors import InvalidInputError

Config = dict[str, float]


@dataclass(frozen=True)
class Loss:
    """A loss: the inputs it needs, how it reads its config, and its per-token formula."""

    name: str
    required: tuple[str, ...]
    per_token: Callable[[torch.Tensor, dict[str, torch.Tensor], Config], torch.Tensor]
    defaults: Config = field(default_factory=dict)
    parse_config: Callable[[Config], Config] | None = None

    @property
    def is_rl(self) -> bool:
        return "advantages" in self.required

    def config(self, user: dict[str, Any] | None) -> Config:
        """Validated config: defaults overridden by the user's keys. Unknown keys are errors."""
        user = dict(user or {})
        if self.parse_config is not None:
            return self.parse_config(user)
        for key in user:
            if key not in self.defaults:
                allowed = sorted(self.defaults) or "none"
                raise InvalidInputError(
                    f"loss_fn_config[{key!r}]", f"not a parameter of {self.name} (takes {allowed})"
                )
        return {**self.defaults, **{k: _finite(k, v) for k, v in user.items()}}

    def trained(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Positions whose logprob gets a gradient: the rest are computed without autograd."""
        if not self.is_rl:
            return x["weights"] != 0
        if self.name == "dro":  # the quadratic term trains even where A = 0
            return x["weights"] != 0
        return (x["weights"] != 0) & (x["advantages"] != 0)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidInputError(f"loss_fn_config[{name!r}]", f"must be a number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Formulas. `x` holds float tensors of shape (N,): weights, and for RL losses logprobs, advantages.


def cross_entropy(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    return -x["weights"] * logp


def importance_sampling(
    logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config
) -> torch.Tensor:
    ratio = torch.exp(logp - x["logprobs"])
    return -x["weights"] * ratio * x["advantages"]


def ppo(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    ratio = torch.exp(logp - x["logprobs"])
    clipped = ratio.clamp(cfg["clip_low_threshold"], cfg["clip_high_threshold"])
    adv = x["advantages"]
    return -x["weights"] * torch.minimum(ratio * adv, clipped * adv)


def soft_clip_ratio(log_ratio: torch.Tensor, lo: float, hi: float, beta: float) -> torch.Tensor:
    """c(r) of CISPO (module docstring). beta = inf gives clamp(r, lo, hi) exactly."""
    if math.isinf(beta):
        return torch.exp(log_ratio).clamp(lo, hi)
    a = math.log(lo) if lo > 0 else -math.inf
    b = math.log(hi)
    upper = F.softplus(log_ratio - b, beta=beta)
    if math.isinf(a):  # one-sided: sp(d - a) = d - a exactly
        return torch.exp(log_ratio - upper)
    return torch.exp(a + F.softplus(log_ratio - a, beta=beta) - upper)


def cispo(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    log_ratio = (logp - x["logprobs"]).detach()
    coef = soft_clip_ratio(
        log_ratio, cfg["clip_low_threshold"], cfg["clip_high_threshold"], cfg["beta"]
    )
    return -x["weights"] * coef * logp * x["advantages"]


def dro(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    penalty = 0.5 * cfg["beta"] * (logp - x["logprobs"]) ** 2
    return -x["weights"] * (logp * x["advantages"] - penalty)


# --------------------------------------------------------------------------------------------
# Config parsing for the clipped losses: the seed's `clip_ratio` or Tinker's thresholds.


def _clip_thresholds(user: Config, loss: str) -> tuple[float, float]:
    has_ratio = "clip_ratio" in user
    has_thresholds = "clip_low_threshold" in user or "clip_high_threshold" in user
    if has_ratio and has_thresholds:
        raise InvalidInputError(
            "loss_fn_config['clip_ratio']",
            "give either clip_ratio or clip_low_threshold/clip_high_threshold, not both",
        )
    eps = _finite("clip_ratio", user.get("clip_ratio", 0.2))
    if not 0.0 <= eps <= 0.5:
        raise InvalidInputError("loss_fn_config['clip_ratio']", f"must be in [0.0, 0.5], got {eps}")
    lo = _finite("clip_low_threshold", user.get("clip_low_threshold", 1.0 - eps))
    hi = _finite("clip_high_threshold", user.get("clip_high_threshold", 1.0 + eps))
    if not 0.0 <= lo <= 1.0:
        raise InvalidInputError(
            "loss_fn_config['clip_low_threshold']", f"must be in [0, 1], got {lo}"
        )
    if hi < 1.0 or math.isinf(hi):
        raise InvalidInputError(
            "loss_fn_config['clip_high_threshold']", f"must be finite and >= 1, got {hi}"
        )
    return lo, hi


def _check_keys(user: Config, allowed: set[str], loss: str) -> None:
    for key in user:
        if key not in allowed:
            raise InvalidInputError(
                f"loss_fn_config[{key!r}]", f"not a parameter of {loss} (takes {sorted(allowed)})"
            )


def _ppo_config(user: Config) -> Config:
    _check_keys(user, {"clip_ratio", "clip_low_threshold", "clip_high_threshold"}, "ppo")
    lo, hi = _clip_thresholds(user, "ppo")
    return {"clip_low_threshold": lo, "clip_high_threshold": hi}


def _cispo_config(user: Config) -> Config:
    _check_keys(user, {"beta", "clip_ratio", "clip_low_threshold", "clip_high_threshold"}, "cispo")
    lo, hi = _clip_thresholds(user, "cispo")
    beta = user.get("beta", 1.0)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise InvalidInputError("loss_fn_config['beta']", f"must be > 0 (inf allowed), got {beta}")
    return {"clip_low_threshold": lo, "clip_high_threshold": hi, "beta": float(beta)}


def _dro_config(user: Config) -> Config:
    _check_keys(user, {"beta"}, "dro")
    beta = _finite("beta", user.get("beta", 0.05))
    if beta < 0 or math.isinf(beta):
        raise InvalidInputError("loss_fn_config['beta']", f"must be finite and >= 0, got {beta}")
    return {"beta": beta}


_RL_INPUTS = ("target_tokens", "logprobs", "advantages")

LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", ("target_tokens", "weights"), cross_entropy),
    "importance_sampling": Loss("importance_sampling", _RL_INPUTS, importance_sampling),
    "ppo": Loss("ppo", _RL_INPUTS, ppo, parse_config=_ppo_config),
    "cispo": Loss("cispo", _RL_INPUTS, cispo, parse_config=_cispo_config),
    "dro": Loss("dro", _RL_INPUTS, dro, parse_config=_dro_config),
}


def get_loss(name: str) -> Loss:
    if not isinstance(name, str):
        raise InvalidInputError("loss_fn", f"must be a loss name, one of {sorted(LOSSES)}; "
                                           f"got {name!r}")
    if name not in LOSSES:
        raise InvalidInputError("loss_fn", f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]
