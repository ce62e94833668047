"""The config base every run's config starts from: the fields all runs read, in one place.

`configs/*.py` build on it (as big_vision's configs on their common fields):
`base_config` holds what every run reads (the task, seeds, the inner and
outer loop's size and steps, evaluation, Keras' settings), `supervised_config`
adds what runs of episodes read (the algorithm and Reptile's settings, shots
and queries, the dtype policy). Required fields are keyword arguments, so a
config that forgets one fails where it is written.
"""

import ml_collections


def base_config(task, *, meta_batch_size, inner_lr, inner_steps, outer_lr, meta_steps,
                steps_per_epoch, validation_batches, eval_tasks, eval_max_steps, seed=0,
                first_order=False, jit_compile="auto", verbose=1):
    """The fields every run reads (`scripts/train.py` looks `task` up in
    `tf_maml.runs.tasks`). `jit_compile="auto"`: XLA where Keras finds an
    accelerator; `verbose`: Keras' 0 silent, 1 progress bar, 2 one line per epoch."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.seed = seed
    config.meta_batch_size = meta_batch_size
    config.inner_lr = inner_lr
    config.inner_steps = inner_steps
    config.first_order = first_order
    config.outer_lr = outer_lr
    config.meta_steps = meta_steps
    config.steps_per_epoch = steps_per_epoch
    config.validation_batches = validation_batches
    config.jit_compile = jit_compile
    config.eval_tasks = eval_tasks
    config.eval_max_steps = eval_max_steps
    config.verbose = verbose
    return config


def supervised_config(task, *, shots, queries, reptile, eval_queries, steps_per_execution,
                      eval_inner_steps=10, algorithm="maml", dtype_policy="float32", **base):
    """`base_config` and the fields of runs of episodes.

    `algorithm`: a name of `tf_maml.family.ALGORITHMS` (maml, with first_order=True
    FOMAML; meta_sgd, anil, boil, cavia, imaml, proto_maml, maml_plus_plus,
    reptile); Reptile's own settings are in `reptile` (inner_lr, inner_steps,
    inner_optimizer, epsilon), iMAML's in `imaml` (proximal_weight, cg_steps;
    the inner loop is `inner_lr` and `inner_steps`), ProtoMAML's in
    `proto_maml` (head_only); `dtype_policy`: Keras' ("mixed_bfloat16" for CPUs
    with bf16 and TPUs, "mixed_float16" for GPUs).
    """
    config = base_config(task, **base)
    config.shots = shots
    config.queries = queries
    config.eval_inner_steps = eval_inner_steps
    config.algorithm = algorithm
    config.reptile = ml_collections.ConfigDict(reptile)
    config.imaml = ml_collections.ConfigDict({"proximal_weight": 2.0, "cg_steps": 5})
    config.proto_maml = ml_collections.ConfigDict({"head_only": False})
    config.dtype_policy = dtype_policy
    config.steps_per_execution = steps_per_execution
    config.eval_queries = eval_queries
    return config


def reinforcement_config(task, *, env, policy_hidden, trajectories, discount, **base):
    """`base_config` and the fields of meta-RL runs (`tf_maml.rl.experiment`).

    `env`: the environment's name and settings (`name` one of
    `tf_maml.rl.experiment.ENVIRONMENTS`); `trajectories` per task before and
    after adapting. The outer update is ProMP's (5 PPO-clip steps, clip 0.3,
    the "lvc" estimator), or the paper's with `outer_update="trpo"` (KL
    bound `max_kl`); `pretrained`: also train one policy on all tasks jointly
    (the paper's "pretrained" baseline).
    """
    config = base_config(task, **base)
    config.env = ml_collections.ConfigDict(env)
    config.policy = ml_collections.ConfigDict({"hidden": tuple(policy_hidden),
                                               "init_log_std": 0.0})
    config.trajectories = trajectories
    config.estimator = "lvc"
    config.outer_update = "ppo"  # or "trpo"
    config.outer_steps = 5  # PPO's
    config.clip_ratio = 0.3
    config.max_kl = 0.01  # TRPO's
    config.discount = discount
    config.gae_lambda = 1.0
    config.pretrained = True
    return config
