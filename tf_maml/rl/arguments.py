"""The arguments of `tf_maml.rl.MetaPolicyGradient`: each checked where it is given or
assigned, with an error that names it."""

from tf_maml.learners.arguments import checked_int
from tf_maml.engine.inner_loop import InnerLoop
from tf_maml.learners import hyperparameter
from tf_maml.rl import objectives


def _check_unbiased_steps(estimator, inner_steps):
    """The unbiased estimator is derived for one inner step."""
    if estimator == "unbiased" and inner_steps > 1:
        raise ValueError(
            f"estimator='unbiased' takes one inner step in meta-training; received "
            f"inner_steps={inner_steps}. Use estimator='lvc' for several.")


def checked_inner_steps(meta, value):
    value = checked_int(value, "inner_steps", 0)
    _check_unbiased_steps(getattr(meta, "estimator", None), value)
    return value


def checked_estimator(meta, value):
    if value not in objectives.ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {objectives.ESTIMATORS}; received "
                         f"{value!r}.")
    _check_unbiased_steps(value, getattr(meta, "inner_steps", 1))
    return value


OUTER_UPDATES = ("ppo", "trpo")


def checked_outer_update(meta, value):
    if value not in OUTER_UPDATES:
        raise ValueError(f"`outer_update` must be one of {OUTER_UPDATES}; received {value!r}.")
    return value


def checked_baseline(meta, value):
    if value not in ("linear", None):
        raise ValueError(f"`baseline` must be 'linear' or None; received {value!r}.")
    return value


def checked_parallel_tasks(meta, value):
    if value == "auto":
        value = 4 if meta.env.pure else 1
    value = checked_int(value, "parallel_tasks", 1)
    if not meta.env.pure and value > 1:
        raise ValueError(
            f"{type(meta.env).__name__} steps its environments outside the graph: its tasks "
            f"must run one at a time (parallel_tasks=1); received {value}.")
    return value


def inner_loop(meta, rule):
    """The inner loop of `rule` (built by it), or an error if the rule learns variables."""
    inner_loop = InnerLoop(meta.model, meta.task_loss, rule)
    if rule.variables:
        raise ValueError(
            f"{rule!r} has meta-learned variables (learned step sizes); "
            "MetaPolicyGradient meta-learns the policy's weights only. Use a rule "
            "without variables (rules.sgd, rules.adam, rules.chain(...)).")
    return inner_loop


def number(name, check):
    return hyperparameter(name, lambda meta, value: check(value, name), f"`{name}` (see the class).")
