"""Omniglot few-shot classification with the MAML paper's hyper-parameters.

Pick a setting after a colon (default 5w1s):
  python scripts/train.py --config=configs/omniglot.py:5w1s \
      --config.data_dir=../shared/data/omniglot --workdir=runs/omniglot_5w1s
Settings: 5w1s, 5w5s, 20w1s, 20w5s, and variable: Meta-Dataset's sampler, 5 to 20
ways, up to 100 support examples and 5 queries per class (padded episodes). Override
any field, e.g. --config.first_order=True.
TaskNorm-I instead of BatchNorm (queries normalized with the support set's
moments blended with their own): --config.model.normalization=task.
"""

import ml_collections

from tf_maml.runs.configs import supervised_config

# ways, shots, inner_lr, inner_steps (meta-training), meta_batch_size: Finn et al. 2017.
SETTINGS = {
    "5w1s": (5, 1, 0.4, 1, 32),
    "5w5s": (5, 5, 0.4, 1, 32),
    "20w1s": (20, 1, 0.1, 5, 16),
    "20w5s": (20, 5, 0.1, 5, 16),
}


def get_config(setting="5w1s"):
    if setting == "variable":
        return variable_config()
    if setting not in SETTINGS:
        raise ValueError(f"Unknown Omniglot setting {setting!r}; choose from "
                         f"{sorted(SETTINGS) + ['variable']}.")
    ways, shots, inner_lr, inner_steps, meta_batch_size = SETTINGS[setting]
    config = supervised_config(
        "omniglot",
        # Episodes: as the original code, as many query as support examples per class.
        shots=shots, queries=shots, meta_batch_size=meta_batch_size,
        inner_lr=inner_lr, inner_steps=inner_steps, eval_inner_steps=10,
        reptile={"inner_lr": 0.001, "inner_steps": 5, "inner_optimizer": "adam", "epsilon": 1.0},
        # Outer loop: Adam 1e-3 for 60,000 meta-steps.
        outer_lr=1e-3, meta_steps=60_000, steps_per_epoch=500, validation_batches=10,
        steps_per_execution=1,
        # Evaluation: 600 test tasks, accuracy after 0..10 inner steps.
        eval_tasks=600, eval_max_steps=10, eval_queries=shots,
    )
    config.ways = ways
    # Data: the official zips in data_dir ("" = tensorflow-datasets' omniglot);
    # 1100 / 100 / 423 characters ("maml") or background / evaluation ("lake");
    # each class of a task rotated by a random multiple of 90 degrees.
    config.data_dir = ""
    config.protocol = "maml"
    config.rotation = "per_class"
    # "fixed": N-way K-shot tasks as above; "variable": Meta-Dataset's sampler
    # (tf_maml.data.variable_episodes: ways in [min_ways, max_ways], shots per
    # class drawn, `queries` per class, padded to max_support and
    # max_ways * queries examples; ways and shots above unused, no rotation).
    config.sampler = "fixed"
    config.variable = ml_collections.ConfigDict(
        {"min_ways": 5, "max_ways": 20, "max_support": 100})
    # conv4: 4 x [3x3 conv 64, normalization, ReLU, 2x2 max-pool], dense logits;
    # normalization "batch" (BatchNorm) or "task" (TaskNorm-I); `context`: CAVIA's
    # context channels entering the third block (0: none), e.g.
    # --config.algorithm=cavia --config.model.context=100.
    config.model = ml_collections.ConfigDict(
        {"filters": 64, "downsample": "max_pool", "normalization": "batch", "context": 0}
    )
    # Query predictions normalized with the query batch's statistics (True, the
    # papers' protocol) or the support set's (False, as adapt() serves);
    # unset: True for BatchNorm, False for TaskNorm. Reports give both figures.
    config.transductive = ml_collections.config_dict.placeholder(bool)
    return config


def variable_config():
    """Meta-Dataset's variable ways and shots on Omniglot, at a budget for a CPU.

    Tasks of 5 to 20 classes, shots drawn per class (up to 100 support
    examples), 5 queries per class; 20 logits. Inner loop as 20-way: 5 steps
    of 0.1 in training, 10 at test; 4 tasks per meta-batch (a task holds up
    to 200 images, twenty times a 5-way 1-shot task).
    """
    config = get_config("20w1s")
    config.sampler = "variable"
    config.rotation = ""
    config.variable.min_ways, config.variable.max_ways, config.variable.max_support = 5, 20, 100
    config.queries = config.eval_queries = 5
    config.meta_batch_size = 4
    return config
