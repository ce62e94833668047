"""The counts episodes are made of (ways, shots, queries, tasks), checked where they enter."""

import numpy as np


def is_integer(value):
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_counts(counts, meanings):
    """Raises a `ValueError` naming the first of `counts` that is not an integer >= 1.

    Args:
        counts: `{name: value}`, in the order to check.
        meanings: `{name: what it counts}`, for the message.
    """
    for name, value in counts.items():
        if not is_integer(value) or value < 1:
            raise ValueError(
                f"`{name}` must be an integer >= 1 ({meanings[name]}); received {value!r}."
            )
