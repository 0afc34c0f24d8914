"""The cookbook's DPO trainer on local comparisons.

    python tests/cookbook_dpo_jsonl.py KEY=VALUE...

The cookbook's DPO command takes only its three hub datasets by name; its docstring sends any
other data to `train_dpo.main` with a config, which is what this does, through the cookbook's own
`ComparisonBuilderFromJsonl` (rows of {"comparison": {...}, "label": "A"|"B"|"Tie"}).
Options: model_name, renderer_name, train_path, log_path, batch_size, max_steps.
"""

from __future__ import annotations

import sys

from tinker_cookbook.preference import train_dpo
from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

if __name__ == "__main__":
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    common = ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=options["model_name"], renderer_name=options["renderer_name"],
        max_length=512, batch_size=int(options["batch_size"]))
    train_dpo.main(train_dpo.Config(
        log_path=options["log_path"], model_name=options["model_name"],
        renderer_name=options["renderer_name"],
        dataset_builder=DPODatasetBuilderFromComparisons(
            common_config=common,
            comparison_builder=ComparisonBuilderFromJsonl(train_path=options["train_path"])),
        recipe_name="dpo_local_jsonl", learning_rate=1e-5, lora_rank=8,
        max_steps=int(options["max_steps"]),
        evaluator_builders=[]))
