"""The RL vocabulary and its pure functions: environments, trajectories and groups (types),
rollouts, advantages and datums. Below the actors; nothing here runs a training run."""
