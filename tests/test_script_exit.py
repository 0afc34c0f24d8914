"""A plain script on the in-process API ends cleanly: exit code 0, no warning or traceback at
exit, no engine process left behind.

The script samples, trains a step and samples again, then simply returns: no close() calls, as a
user's first script would. The sampler engine is closed by the interpreter's exit hooks, after
concurrent.futures has stopped taking work: the engine's shutdown must not need it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

SCRIPT = '''
import psutil
import mint_rl as mint
from mint_rl import types
from mint_rl.models import DEFAULT_MODEL


def main() -> None:
    training = mint.ServiceClient().create_lora_training_client(DEFAULT_MODEL, rank=8, seed=0)
    prompt = types.ModelInput.from_ints(training.get_tokenizer().encode("What is 2 + 3?"))
    params = types.SamplingParams(max_tokens=4, temperature=1.0)
    first = training.save_weights_and_get_sampling_client().sample(prompt, 2, params).result()
    tokens = prompt.to_ints() + list(first.sequences[0].tokens)
    datum = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                        loss_fn_inputs={"target_tokens": tokens[1:],
                                        "weights": [1.0] * (len(tokens) - 1)})
    training.forward_backward([datum], "cross_entropy").result()
    training.optim_step(types.AdamParams(learning_rate=1e-4)).result()
    training.save_weights_and_get_sampling_client().sample(prompt, 2, params).result()
    children = psutil.Process().children(recursive=True)
    print("children", *[p.pid for p in children], flush=True)


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this file
    main()
'''


def test_a_script_ends_without_warnings_and_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    children = [int(pid) for line in done.stdout.splitlines() if line.startswith("children ")
                for pid in line.split()[1:]]
    assert children, "the script started no engine process"
    for problem in ("Traceback", "cannot schedule new futures", "sampler engine shutdown",
                    "leaked semaphore", "EngineDeadError"):
        assert problem not in output, output[-4000:]
    # Exit waited for the engine's shutdown: its processes end with the script (moments later,
    # once the kernel has reaped them).
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
              for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in children
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"engine processes left: {left}"
