"""The compiled loss of one task, each output's too, without touching Keras' loss trackers.

With several outputs, Keras' compiled loss records each output's loss in a
`Mean` tracker (`cls_loss`, ...) whenever it is called. The inner loop calls
it at every step of every task; those calls must not reach the trackers,
and the per-output losses logged must be the query losses after adaptation,
as `loss` is. So the loss runs in a `keras.StatelessScope` that starts the
trackers at zero and keeps their updates to itself: each tracker's result
in the scope is that output's loss.
"""

import keras
import tensorflow as tf

from tf_maml.episodes import valid_examples
from tf_maml.keras_patches import with_example_mask


def trackers(compile_loss):
    """Keras' per-output loss trackers (none for a single output)."""
    return list(compile_loss.metrics) if compile_loss is not None else []


def losses(compile_loss, y, y_pred, weights=None):
    """`(total, {tracker name: value})`: the compiled loss of `y_pred`, and each output's.

    `weights`: `[examples]` per-example weights, 0 marking padding: each loss
    is then that of the examples of non-zero weight, weighted as Keras
    weights samples (through Keras' masks, whatever the loss's reduction).
    """
    if weights is not None:
        weights = tf.convert_to_tensor(weights)
        if not weights.dtype.is_floating:  # Keras casts it to each loss's dtype
            weights = tf.cast(weights, tf.float32)
        y_pred = with_example_mask(y_pred, weights)
        # Padding's labels set to 0: an out-of-range class or a NaN target would make
        # the loss NaN (a NaN times a zero weight is still NaN).
        y = valid_examples(y, weights)
    own = trackers(compile_loss)
    if not own:
        return compile_loss(y, y_pred, sample_weight=weights), {}
    zeros = [(v, tf.zeros(v.shape, v.dtype)) for m in own for v in m.variables]
    with keras.StatelessScope(state_mapping=zeros, initialize_variables=False):
        total = compile_loss(y, y_pred, sample_weight=weights)
        return total, {m.name: m.result() for m in own}

