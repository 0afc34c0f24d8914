"""The built-in losses: cross_entropy, importance_sampling, ppo, cispo, dro, gspo,
stable_reinforce.

Every loss is token-level and summed over tokens and datums (no length normalisation). Notation,
per token t: logp_t = learner log-probability of target_tokens[t], logq_t = the sampler's
(`logprobs` input), r_t = exp(logp_t - logq_t), A_t = advantages[t], w_t = weights[t],
sg = stop-gradient.

    cross_entropy        -sum w·logp
    importance_sampling  -sum w·r·A
    ppo                  -sum w·min(r·A, clip(r, lo, hi)·A)
    cispo                -sum w·sg(c(r))·logp·A        c = soft clip of the ratio, see below
    dro                  -sum w·(logp·A - ½·beta·(logp - logq)²)
    gspo                 -sum w·min(s_t·A, clip(s_t, lo, hi)·A)
                         s = exp(mean over M of (sg logp - logq)), s_t = sg(s)·exp(logp - sg logp)
    stable_reinforce     -sum w·k·(sg(min(r, C))·logp·A - kl_coeff·(r - 1 - log r))
                         k = 1 if lo_m <= r <= hi_m else 0 (the trust band, detached)

GSPO (GSPO-token, as Tinker implements it): M is the datum's `sequence_ratio_mask` (default: its
trained positions, w != 0). s is the geometric mean of the datum's ratios over M, so every token
of a sequence is clipped together; s_t has the value s and the gradient s·grad(logp_t).

stable_reinforce: truncated importance-weighted REINFORCE against the behaviour logprobs (the
sampler's, recorded at sampling time when the datum's provenance names recorded sequences, see
mint_rl/stability.py), tokens whose ratio leaves the trust band dropped, and an optional k3
estimate of KL(sampler || learner) as a penalty. docs/losses.md gives the reasons.

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
from collections.abc import Callable, Mapping
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
    # Float inputs it reads besides weights/mask and the required ones (each has a default).
    optional: tuple[str, ...] = ()
    # A term that trains every weighted token, A = 0 or not (dro's quadratic, a KL penalty).
    trains_without_advantage: bool = False
    # The ratio its clip bounds act on, for the clip_frac metric (None: the token ratio r).
    clip_ratio: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor] | None = None
    # Trains against the behaviour logprobs recorded at sampling time where the datum's
    # provenance names recorded sequences (mint_rl/stability.py).
    reads_stability_info: bool = False

    @property
    def is_rl(self) -> bool:
        return "advantages" in self.required

    def config(self, user: dict[str, Any] | None) -> Config:
        """Validated config: defaults overridden by the user's keys. Unknown keys are errors."""
        if user is not None and not isinstance(user, Mapping):
            raise InvalidInputError("loss_fn_config", f"must be a dict of name -> number, got "
                                                      f"{type(user).__name__}")
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
        if not self.is_rl or self.trains_without_advantage:
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


def sequence_ratio(logp: torch.Tensor, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """GSPO's s for every position of one datum: exp of the mean log-ratio over the sequence
    ratio mask, detached. An empty mask gives s = 1 (inputs.py refuses it where tokens train)."""
    mask = x["sequence_ratio_mask"]
    log_ratio = (logp.detach() - x["logprobs"]) * mask
    mean = log_ratio.sum() / mask.sum().clamp(min=1.0)
    return torch.exp(mean).expand_as(logp)


def gspo(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    # s_t: value s, gradient s·grad(logp_t) (the exp factor is 1 with derivative 1).
    s_t = sequence_ratio(logp, x) * torch.exp(logp - logp.detach())
    clipped = s_t.clamp(cfg["clip_low_threshold"], cfg["clip_high_threshold"])
    adv = x["advantages"]
    return -x["weights"] * torch.minimum(s_t * adv, clipped * adv)


def stable_reinforce(logp: torch.Tensor, x: dict[str, torch.Tensor], cfg: Config) -> torch.Tensor:
    log_ratio = logp - x["logprobs"]
    ratio = torch.exp(log_ratio.detach())
    in_band = (ratio >= cfg["mask_low_threshold"]) & (ratio <= cfg["mask_high_threshold"])
    # A token outside the band is computed as if r = 0 (weight) and log r = 0 (penalty): both
    # terms are then exactly 0 with finite gradients, where the ratio itself may be inf.
    weight = torch.where(in_band, ratio, 0.0).clamp(max=cfg["clip_high_threshold"])
    per_token = weight * logp * x["advantages"]  # weight is detached: it only scales
    if cfg["kl_coeff"] != 0:
        # k3 = r - 1 - log r >= 0: unbiased for KL(sampler || learner) on the sampler's tokens;
        # its gradient (r - 1)·grad(logp) pulls the learner back toward the sampler.
        lr = torch.where(in_band, log_ratio, 0.0)
        per_token = per_token - cfg["kl_coeff"] * (torch.exp(lr) - 1 - lr)
    return -x["weights"] * per_token


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
    return _ratio_bounds(user, 1.0 - eps, 1.0 + eps)


def _ratio_bounds(user: Config, lo_default: float, hi_default: float) -> tuple[float, float]:
    """clip_low_threshold in [0, 1] and clip_high_threshold finite and >= 1: absolute bounds on
    the ratio (Tinker's convention), so the on-policy ratio 1 is never clipped."""
    lo = _finite("clip_low_threshold", user.get("clip_low_threshold", lo_default))
    hi = _finite("clip_high_threshold", user.get("clip_high_threshold", hi_default))
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


# GSPO's bounds on the sequence ratio s: the GSPO paper's (arXiv 2507.18071 v2, section 5.1)
# eps_low = 3e-4 and eps_high = 4e-4, as absolute bounds. s is a per-token geometric mean, so
# it moves far less than a token ratio; PPO's 0.8/1.2 would almost never clip it.
GSPO_CLIP = (1.0 - 3e-4, 1.0 + 4e-4)


def _gspo_config(user: Config) -> Config:
    _check_keys(user, {"clip_low_threshold", "clip_high_threshold"}, "gspo")
    lo, hi = _ratio_bounds(user, *GSPO_CLIP)
    return {"clip_low_threshold": lo, "clip_high_threshold": hi}


# stable_reinforce defaults (docs/losses.md gives the reasons): the truncation cap C of the
# importance weight (TIS; verl's rollout_is_threshold), the trust band [1/5, 5] on the token
# ratio, symmetric in log space (IcePop-style masking), and no KL penalty (the cookbook puts
# its KL penalty into the advantages; a second one here would count it twice).
STABLE_REINFORCE_DEFAULTS: Config = {
    "clip_high_threshold": 2.0, "mask_low_threshold": 0.2, "mask_high_threshold": 5.0,
    "kl_coeff": 0.0,
}


def _stable_reinforce_config(user: Config) -> Config:
    _check_keys(user, set(STABLE_REINFORCE_DEFAULTS), "stable_reinforce")
    cfg = {**STABLE_REINFORCE_DEFAULTS, **{k: _finite(k, v) for k, v in user.items()}}
    checks = (  # (key, ok, what it must be); inf is allowed where it means "off"
        ("clip_high_threshold", cfg["clip_high_threshold"] >= 1.0, ">= 1 (inf: no truncation)"),
        ("mask_low_threshold", 0.0 <= cfg["mask_low_threshold"] <= 1.0, "in [0, 1]"),
        ("mask_high_threshold", cfg["mask_high_threshold"] >= 1.0, ">= 1 (inf: no upper mask)"),
        ("kl_coeff", 0.0 <= cfg["kl_coeff"] < math.inf, "finite and >= 0"),
    )
    for key, ok, what in checks:
        if not ok:
            raise InvalidInputError(f"loss_fn_config[{key!r}]", f"must be {what}, got {cfg[key]}")
    return cfg


_RL_INPUTS = ("target_tokens", "logprobs", "advantages")

LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", ("target_tokens", "weights"), cross_entropy),
    "importance_sampling": Loss("importance_sampling", _RL_INPUTS, importance_sampling),
    "ppo": Loss("ppo", _RL_INPUTS, ppo, parse_config=_ppo_config),
    "cispo": Loss("cispo", _RL_INPUTS, cispo, parse_config=_cispo_config),
    "dro": Loss("dro", _RL_INPUTS, dro, parse_config=_dro_config, trains_without_advantage=True),
    "gspo": Loss("gspo", _RL_INPUTS, gspo, parse_config=_gspo_config,
                 optional=("sequence_ratio_mask",), clip_ratio=sequence_ratio),
    # Its KL term trains weighted tokens with A = 0 too (when kl_coeff > 0).
    "stable_reinforce": Loss("stable_reinforce", _RL_INPUTS, stable_reinforce,
                             parse_config=_stable_reinforce_config,
                             trains_without_advantage=True, reads_stability_info=True),
}


# Tinker's CISPO (docs /tinker/losses, tutorial 202): the ratio hard-clipped to [0, 4], detached.
TINKER_CISPO_CLIP = (0.0, 4.0)


def tinker_loss_config(loss_fn: str, user: dict[str, Any] | None) -> dict[str, Any] | None:
    """The config a Tinker SDK user means, in this module's terms (what the server applies).

    Tinker and the seed agree on every loss but CISPO. Tinker's CISPO clips the ratio hard, by
    default to [0.0, 4.0]; the seed's clips softly with sharpness `beta` on [0.8, 1.2]. A config
    without `beta` is Tinker's (beta = inf; Tinker's default thresholds unless given); one with
    `beta` asks for the seed's soft clip and is taken as is."""
    if loss_fn != "cispo" or not isinstance(user, Mapping | None) or "beta" in (user or {}):
        return user  # a config that is not a mapping is refused by Loss.config, by name
    tinker = dict(user or {})
    if "clip_ratio" not in tinker:  # mint_rl's epsilon form sets both bounds itself
        lo, hi = TINKER_CISPO_CLIP
        tinker = {"clip_low_threshold": lo, "clip_high_threshold": hi, **tinker}
    return {**tinker, "beta": math.inf}


def get_loss(name: str) -> Loss:
    if not isinstance(name, str):
        raise InvalidInputError("loss_fn", f"must be a loss name, one of {sorted(LOSSES)}; "
                                           f"got {name!r}")
    if name not in LOSSES:
        raise InvalidInputError("loss_fn", f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]
