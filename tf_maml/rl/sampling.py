"""Sampling while adapting: each task's trajectories after 0, 1, ... inner steps.

What a meta-iteration and an evaluation of `MetaPolicyGradient` both start
from: per task, sample, adapt on those trajectories, sample again, `steps`
times, in the task loop.
"""

import tensorflow as tf

from tf_maml.engine import task_loop as task_loop_lib
from tf_maml.rl import rollouts


def sample_adapting(meta, params, state, tasks, seeds, steps, keep):
    """Per task: sample, adapt, sample again... `steps` times.

    Returns a dict: `returns` `[T, steps + 1]`, the average return of the
    trajectories sampled after 0..steps inner steps, `success` alike (the
    fraction that succeeded) for an environment that `reports_success`,
    and, if `keep`, `trajectories`: for each step, a dict of `[T, K, H, ...]`.
    """
    fields = {**{k: tf.float32 for k in rollouts.FIELDS},
              "actions": meta.distribution.action_dtype,
              "advantages": tf.float32, "scale": tf.float32, "return": tf.float32}
    reports_success = meta.env.reports_success
    measured = ("returns", "success") if reports_success else ("returns",)
    if reports_success:
        fields["success"] = tf.float32

    def task_fn(task, state):
        task_params, seed = task
        current, rule_state, per_step, kept, faults = params, None, [], [], []
        successes = []
        for step in range(steps + 1):
            # Sampling after inner step k draws from fold_in(the task's seed, k).
            trajectories = meta._rollout(current, state, task_params,
                                         tf.random.experimental.stateless_fold_in(seed, step))
            per_step.append(trajectories["return"])
            if reports_success:
                successes.append(trajectories["success"])
            kept.append(trajectories)
            faults.append(rollouts.environment_fault_code(trajectories))
            if step < steps:
                current, state, rule_state = meta._adapt(current, state, trajectories, True,
                                                         rule_state, step)
        stacks = {"returns": tf.stack(per_step),
                  "environment_fault": tf.reduce_max(tf.stack(faults))}
        if reports_success:
            stacks["success"] = tf.stack(successes)
        if keep:
            stacks["trajectories"] = kept
        return state, [], {}, stacks

    seed_dtype = {**{k: tf.float32 for k in measured}, "environment_fault": tf.float32}
    if keep:
        seed_dtype["trajectories"] = [fields] * (steps + 1)
    return task_loop_lib.run_tasks(task_fn, (tasks, seeds), state, [], [],
                                   seed_dtype, tf.float32, "while", meta.parallel_tasks)


def measured_logs(sampled):
    """A step's logs: returns after the inner steps and before, the fraction of
    episodes that succeeded after them (environments that report success)."""
    returns = sampled["returns"]
    logs = {"return": returns[:, -1], "pre_adaptation_return": returns[:, 0]}
    if "success" in sampled:
        logs["success"] = sampled["success"][:, -1]
    return logs
