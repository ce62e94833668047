"""Sinusoid regression, the MAML paper's protocol (Finn et al., 2017, sec. 5.1).

python scripts/train.py --config=configs/sinusoid.py --workdir=runs/sinusoid
Override any field: --config.shots=5 --config.inner_steps=5 --config.meta_steps=2000
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.task = "sinusoid"
    config.seed = 0
    # Episodes: K support points, as many query points, 25 tasks a meta-batch.
    config.shots = 10
    config.queries = 10
    config.meta_batch_size = 25
    # The network: 1-40-40-1, ReLU.
    config.model = ml_collections.ConfigDict({"hidden": (40, 40)})
    # Inner loop: one SGD step of 0.01 in meta-training.
    config.inner_lr = 0.01
    config.inner_steps = 1
    config.eval_inner_steps = 10
    config.first_order = False
    # The algorithm: maml (first_order=True: FOMAML), meta_sgd, anil,
    # maml_plus_plus, or reptile (its settings below).
    config.algorithm = "maml"
    config.reptile = ml_collections.ConfigDict(
        {"inner_lr": 0.01, "inner_steps": 5, "inner_optimizer": "sgd", "epsilon": 1.0}
    )
    # Outer loop: Adam 1e-3 for 70,000 meta-steps.
    config.outer_lr = 1e-3
    config.meta_steps = 70_000
    config.steps_per_epoch = 1_000
    config.validation_batches = 8
    config.jit_compile = "auto"  # XLA where Keras finds an accelerator
    # Keras dtype policy: "mixed_bfloat16" (CPUs with bf16, TPUs) or "mixed_float16" (GPUs).
    config.dtype_policy = "float32"
    # Meta-steps per tf.function call: a sinusoid step takes milliseconds, so
    # running callbacks (TensorBoard, progress bar) after each would dominate.
    config.steps_per_execution = 100
    # Evaluation: 600 fresh tasks, loss after 0..10 steps on 100 query points.
    config.eval_tasks = 600
    config.eval_max_steps = 10
    config.eval_queries = 100
    config.verbose = 1  # Keras: 0 silent, 1 progress bar, 2 one line per epoch
    return config
