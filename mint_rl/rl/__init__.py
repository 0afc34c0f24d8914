"""RL building blocks: advantages, datum building, metrics logging."""
