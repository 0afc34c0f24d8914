"""Models of real architectures built here (mint_rl/model_shapes.py): the published shapes, and
the GPU learner bench that builds one from its config alone (run on the CPU with a tiny shape).

The parameter counts are the ones the model cards publish; a wrong width, depth or head count in
a shape shows up as a different count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from mint_rl.errors import InvalidInputError
from mint_rl.model_shapes import SHAPES, prepare_random_model, shape_config

# Parameters with the published vocabulary and tied embeddings (model cards; computed from the
# published configs).
PUBLISHED_PARAMETERS = {
    "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976,
    "qwen2.5-0.5b": 494_032_768,
    "llama-3.2-1b": 1_235_814_400,
    "smollm2-360m": 361_821_120,
}


def _parameters(config) -> int:
    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_has_its_published_parameter_count(name):
    assert _parameters(shape_config(name)) == PUBLISHED_PARAMETERS[name]


def test_a_folder_built_here_uses_the_bundled_tokenizers_vocabulary():
    # 491M parameters for qwen3-0.6b: the published model less (151,936 - 49,152) x 1024.
    assert _parameters(shape_config("qwen3-0.6b", vocab_size=49152)) == (
        PUBLISHED_PARAMETERS["qwen3-0.6b"] - (151_936 - 49_152) * 1024)


def test_an_unknown_shape_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidInputError, match="shape"):
        prepare_random_model("qwen9-1t", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_gpu_learner_bench_runs_on_a_cpu_with_a_tiny_shape(tmp_path):
    script = Path(__file__).parent.parent / "bench" / "gpu_learner.py"
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--shape", "tiny",
                           "--batch", "1x2x32", "--steps", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["tokens"] == 64 and row["tokens_per_s"] > 0
    assert row["plan"]["memory/microbatches:sum"] >= 1
