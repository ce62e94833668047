"""Sinusoid regression, the MAML paper's protocol (Finn et al., 2017, sec. 5.1).

python scripts/train.py --config=configs/sinusoid.py --workdir=runs/sinusoid
Override any field: --config.shots=5 --config.inner_steps=5 --config.meta_steps=2000
"""

import ml_collections

from tf_maml.runs.configs import supervised_config


def get_config():
    config = supervised_config(
        "sinusoid",
        # Episodes: K support points, as many query points, 25 tasks a meta-batch.
        shots=10, queries=10, meta_batch_size=25,
        # Inner loop: one SGD step of 0.01 in meta-training, up to 10 at test.
        inner_lr=0.01, inner_steps=1, eval_inner_steps=10,
        reptile={"inner_lr": 0.01, "inner_steps": 5, "inner_optimizer": "sgd", "epsilon": 1.0},
        # Outer loop: Adam 1e-3 for 70,000 meta-steps.
        outer_lr=1e-3, meta_steps=70_000, steps_per_epoch=1_000, validation_batches=8,
        # Meta-steps per tf.function call: a sinusoid step takes milliseconds, so
        # running callbacks (TensorBoard, progress bar) after each would dominate.
        steps_per_execution=100,
        # Evaluation: 600 fresh tasks, loss after 0..10 steps on 100 query points.
        eval_tasks=600, eval_max_steps=10, eval_queries=100,
    )
    # 1-40-40-1, ReLU; `context`: CAVIA's context parameters after the input (0: none),
    # e.g. --config.algorithm=cavia --config.model.context=4 --config.inner_lr=1.0.
    config.model = ml_collections.ConfigDict({"hidden": (40, 40), "context": 0})
    return config
