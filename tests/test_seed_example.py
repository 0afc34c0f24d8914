"""The seed's example runs against mint_rl with only the import (and model id) changed."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "seed_example.py"


@pytest.mark.slow
def test_seed_example_prints_finite_losses(default_model):
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    losses = dict(re.findall(r"(SFT|PPO) loss: (\S+)", out.stdout))
    assert set(losses) == {"SFT", "PPO"}
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert float(losses["SFT"]) > 0
    assert "optim_step: ok" in out.stdout


def test_seed_weights_as_written_are_rejected(tiny_model):
    import mint_rl as mint
    from mint_rl import types

    tc = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4)
    prompt_ids, target_ids = [5, 6, 7], [8, 9]
    all_ids = prompt_ids + target_ids
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(all_ids[:-1]),
        loss_fn_inputs={"target_tokens": all_ids[1:],
                        "weights": [0] * len(prompt_ids) + [1] * len(target_ids)},
    )
    with pytest.raises(ValueError, match="weights"):
        tc.forward_backward([datum], loss_fn="cross_entropy")
