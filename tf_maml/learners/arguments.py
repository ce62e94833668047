"""Arguments of the meta-learners: checked where they are given, refused if a member cannot honour them."""

import numpy as np

from tf_maml import rules

DEFAULT_INNER_LR = 0.4


def checked_int(value, name, minimum, label=None):
    """`value` as an int >= `minimum`; the error names `label` (default: `name` in backticks)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"{label or f'`{name}`'} must be an integer >= {minimum}; received {value!r}."
        )
    return int(value)


def checked_fraction(value, name, zero_allowed=False):
    """`value` as a float in (0, 1], or [0, 1] if `zero_allowed`, or an error naming it."""
    interval = "[0, 1]" if zero_allowed else "(0, 1]"
    number = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
    if not number or not (0 <= value <= 1) or (value == 0 and not zero_allowed):
        raise ValueError(f"`{name}` must be a number in {interval}; received {value!r}.")
    return float(value)


def checked_positive(value, name):
    """`value` as a finite float > 0, or an error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a positive number; received {value!r}.") from None
    if isinstance(value, bool) or not np.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` must be a positive number; received {value!r}.")
    return number


def checked_inner_lr(inner_lr):
    return checked_positive(inner_lr, "inner_lr")


# Rules named by a string, as Keras names optimizers, with their default step sizes.
NAMED_RULES = {"sgd": (rules.sgd, DEFAULT_INNER_LR), "adam": (rules.adam, 0.001)}


def named_rule(name, inner_lr):
    """The rule `name` ("sgd" or "adam") of step size `inner_lr` (None: its default)."""
    make, default = NAMED_RULES[name]
    return make(checked_inner_lr(default if inner_lr is None else inner_lr))


def checked_rule(inner_optimizer, inner_lr):
    """`(rule, inner_lr)`: the rule given (or named: "sgd", "adam", of `inner_lr`), or SGD
    of `inner_lr` (default 0.4); `inner_lr` None unless SGD was made from it."""
    if inner_optimizer is None:
        inner_lr = checked_inner_lr(DEFAULT_INNER_LR if inner_lr is None else inner_lr)
        return rules.sgd(inner_lr), inner_lr
    if isinstance(inner_optimizer, str) and inner_optimizer in NAMED_RULES:
        return named_rule(inner_optimizer, inner_lr), None
    if isinstance(inner_optimizer, dict):
        inner_optimizer = rules.deserialize(inner_optimizer)
    if not isinstance(inner_optimizer, rules.Rule):
        raise TypeError(
            f"`inner_optimizer` must be one of {sorted(NAMED_RULES)} or a tf_maml.rules rule, "
            f"e.g. rules.adam(0.001); received {inner_optimizer!r}."
        )
    if inner_lr is not None:
        raise ValueError(
            f"Pass either `inner_lr` ({inner_lr}) or `inner_optimizer` ({inner_optimizer!r}), "
            "not both: the rule holds its own step sizes."
        )
    if not inner_optimizer.steps_params:
        raise ValueError(
            f"{inner_optimizer!r} only transforms gradients; chain it with a rule that steps: "
            f"rules.chain({inner_optimizer!r}, rules.sgd(0.4))."
        )
    return inner_optimizer, None


def refuse(kwargs, member, **reasons):
    """Raises if `kwargs` holds an argument named in `reasons` (name -> why not)."""
    for name, reason in reasons.items():
        if name in kwargs:
            raise ValueError(
                f"{member} does not take `{name}` ({name}={kwargs[name]!r}): {reason}."
            )
