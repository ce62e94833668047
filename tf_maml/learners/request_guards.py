"""Served requests checked: bad input is named, a diverged adaptation never answers.

`adapt()` checks its request in Python before adapting, and the adapted
weights after; the adaptive SavedModels check the same in their graph
(`tf.debugging`), so the served call fails with a message naming the input.
A support set with a NaN would otherwise give NaN weights whose predictions
can still look plausible (a NaN kernel behind a ReLU gives zeros).
"""

import numpy as np
import tensorflow as tf

from tf_maml.learners import guards


class NonFiniteInputError(ValueError):
    """A request holds a NaN or infinite value, or a negative weight, in a named input."""


class AdaptationDivergedError(FloatingPointError):
    """The adaptation to a finite request gave weights that are not finite."""


def _as_array(value):
    value = tf.convert_to_tensor(value)
    if value.dtype not in (tf.float32, tf.float64):
        value = tf.cast(value, tf.float32)  # bfloat16 and float16 as numpy reads them
    return value.numpy()


def check_request(named, weights=()):
    """Raises `NonFiniteInputError` naming the first floating input of `named`
    (`(name, tensor)` pairs) with a NaN or infinite value, or, for the names in
    `weights`, a negative one."""
    for name, value in named:
        if value is None or not tf.as_dtype(value.dtype).is_floating:
            continue
        array = _as_array(value)
        per_example = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
        for bad, what in ((~np.isfinite(per_example), "a NaN or infinite value"),
                          (per_example < 0 if name in weights else None, "a negative value")):
            if bad is not None and bad.any():
                examples = np.flatnonzero(bad.any(axis=1))
                raise NonFiniteInputError(
                    f"{name} holds {what} in {len(examples)} of its {len(per_example)} "
                    f"examples (the first: example {examples[0]}); a request must hold "
                    "finite values" + (", and weights >= 0." if name in weights else ".")
                )


def request_assertions(named, weights=()):
    """The graph's checks of `check_request`, to run before the adaptation."""
    checks = []
    for name, value in named:
        if not value.dtype.is_floating:
            continue
        checks.append(tf.debugging.assert_all_finite(
            value, f"{name} holds a NaN or infinite value; a request must hold finite values"))
        if name in weights:
            checks.append(tf.debugging.assert_non_negative(
                value, message=f"{name} holds a negative value; weights must be >= 0"))
    return checks


def diverged_message(steps, hint):
    return (f"The adaptation diverged: after {steps} inner steps on a finite request the "
            f"adapted weights are not finite (NaN or infinite), so there is no answer. {hint}")


def check_adapted(finite, steps, hint):
    """Raises `AdaptationDivergedError` unless `finite` (`guards.all_finite` of the adapted
    weights); `hint()` says why."""
    if not bool(finite):
        raise AdaptationDivergedError(diverged_message(steps, hint()))


def adapted_assertion(tensors, steps, hint):
    """The graph's check of `check_adapted`: a failing served call says why. Gate the
    answer on it, not the forward pass: the check then runs beside the forward pass."""
    return tf.debugging.Assert(guards.all_finite(tensors), [diverged_message(steps, hint)])
