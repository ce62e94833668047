"""`MetaLearner`: the one Keras face of tf_maml's meta-learners, supervised and RL.

What every meta-learner shares is here, written once: the step guard that
turns a non-finite or malformed step into a clear error after it, the exact
second-order ops around every traced step, hyper-parameters that make Keras
trace its steps anew when assigned, Keras' `compute_loss` as the task loss
of both loops, the RNG seed state saved with the weights, and the standalone
adapted model that `adapt` returns.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from tf_maml.learners import guards
from tf_maml.learners.adapted_model import adapted_copy
from tf_maml.keras_patches import BuildsItself, exact_second_order, is_validation_within_fit


def hyperparameter(name, check, doc):
    """A meta-learner property read while its steps are traced.

    Assigning it runs `check(meta, value)` (which returns the value to keep
    or raises naming the attribute) and makes Keras trace the steps anew, so
    the next `fit`, `evaluate` or `predict` computes what a meta-learner made
    with that value computes.
    """
    attribute = f"_hp_{name}"

    def get(self):
        return getattr(self, attribute)

    def set_(self, value):
        setattr(self, attribute, check(self, value))
        self.retrace()

    return property(get, set_, doc=doc)


def flag(name):
    """A True/False `hyperparameter` (any value taken as its truth)."""
    return hyperparameter(name, lambda meta, value: bool(value), f"`{name}` (see the class).")


def fixed(name, why):
    """A `hyperparameter` check for a value a member fixes when it is made: the first
    assignment (from `__init__`) passes, later ones raise naming the attribute."""
    def check(meta, value):
        if hasattr(meta, f"_hp_{name}"):
            raise AttributeError(
                f"`{name}` of {type(meta).__name__} is fixed when it is made ({why}); make a "
                f"new {type(meta).__name__} with {name}={value!r} (its weights can be copied "
                "with set_weights).")
        return value

    return check


@keras.saving.register_keras_serializable(package="tf_maml")
class MetaLearner(BuildsItself, keras.Model):
    """Base of tf_maml's meta-learners: a `keras.Model` whose `fit` meta-trains `model`.

    Subclasses (`tf_maml.MAML` and its family, `tf_maml.rl.MetaPolicyGradient`)
    write `train_step`, `test_step` and `compute_loss`; this base gives them:

    - the step guard: a step whose meta-loss or meta-gradient is not finite,
      or whose episodes are malformed, updates nothing, and `fit`,
      `evaluate`, `train_on_batch` and `test_on_batch` raise a clear error
      right after it (`tf_maml.guards`; `fault_hint` adds the likely
      causes);
    - exact second derivatives: every `train_step`, `test_step` and
      `predict_step` a subclass writes runs within `meta_learning_ops()`
      (`tf_maml.exact_second_order`, per thread);
    - hyper-parameters that retrace (`hyperparameter`): assigned after `fit`
      or `evaluate`, they apply from the next call, or raise naming the
      attribute where a change cannot apply;
    - `compute_loss(x, y, y_pred, sample_weight, training)`, Keras'
      customization point, as the task loss: the inner loop descends it on
      the support set and the outer loop meta-learns through it on the
      query set (an override applies to both);
    - `adapted_model(params, state)`: a standalone copy of `model` holding
      given weights, what `adapt` returns;
    - `get_config` / `from_config` of the wrapped model (subclasses add their
      hyper-parameters), and the RNG seed state of `model` (Dropout) saved
      with the weights.

    Args:
        model: the `keras.Model` whose weights are meta-learned.
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init_subclass__(cls, **kwargs):
        # Every step a subclass writes runs within `meta_learning_ops()`: the
        # ops are chosen per thread, and under tf.distribute each replica's
        # step is traced in a thread of its own.
        super().__init_subclass__(**kwargs)
        for name in ("train_step", "test_step", "predict_step"):
            step = getattr(cls, name)  # the class's own or a mixin's
            if not hasattr(step, "within_meta_learning_ops"):
                setattr(cls, name, _within_meta_learning_ops(step))
        # Work that reads a subclass's attributes runs after its whole __init__
        # (`_after_init`), never from inside it: a subclass sets its attributes
        # after super().__init__(...) as for any Keras layer.
        if "__init__" in cls.__dict__:
            cls.__init__ = _then_after_init(cls.__dict__["__init__"])

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
        self.model = model
        # Faults of a step (NaN, bad labels, empty sets); not a weight, never saved.
        self._guard = guards.StepGuard()

    def _after_init(self):
        """Runs once the outermost `__init__` of the instance's class has returned."""

    # The constructor argument that takes the wrapped model (RL's: "policy").
    model_argument = "model"

    def get_config(self):
        """The constructor's arguments: the wrapped model's config and, from subclasses,
        each hyper-parameter, so a `.keras` file remakes the meta-learner."""
        return {"name": self.name, "trainable": self.trainable,
                self.model_argument: keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config[cls.model_argument] = keras.saving.deserialize_keras_object(
            config[cls.model_argument], custom_objects=custom_objects)
        return cls(**config)

    # ------------------------------------------------------------------
    # Traced steps: hyper-parameters read while tracing, exact ops.

    def retrace(self):
        """Makes Keras trace the `fit`, `evaluate` and `predict` steps anew at their next call.

        Assigning a hyper-parameter calls it; subclasses drop other traces here too.
        """
        self.train_function = self.test_function = self.predict_function = None

    def meta_learning_ops(self):
        """The context every step runs in: exact second derivatives (this thread only)."""
        return exact_second_order(xla=bool(self.jit_compile))

    # ------------------------------------------------------------------
    # The task loss.

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss of one task's predictions `y_pred` of examples `x` with labels `y`.

        The inner loop descends it on the support set; the meta-objective is
        it on the query set after adaptation. Override it (as Keras
        documents) to change both. The model's regularization losses of the
        same forward pass are added to it by the meta-learner.

        Args:
            x: the examples (one task's, no task axis).
            y: their labels.
            y_pred: the model's predictions under the weights at hand.
            sample_weight: `[examples]` weights, 0 marking padding; or None.
            training: True in the inner loop and in meta-training steps,
                False in evaluation's query losses.

        Returns:
            A scalar: the task's loss, not divided by the number of replicas.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss().")

    def task_loss(self, x, y, y_pred, extra_losses=(), sample_weight=None, training=True):
        """`compute_loss` plus the regularization losses of the forward pass
        (`extra_losses`, as `stateless_call` returns them): what both loops descend."""
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=training)
        if extra_losses:
            loss += tf.add_n([tf.cast(tf.reduce_sum(e), loss.dtype) for e in extra_losses])
        return loss

    # ------------------------------------------------------------------
    # Keras' entry points, with the step guard.

    def divergence_hint(self):
        """The likely causes of a non-finite loss from finite input, for the error message."""
        return "Lower the outer learning rate or the inner step size."

    def fault_hint(self):
        """What a non-finite loss, gradient or adaptation from finite input comes from:
        weights that are already not finite (set or loaded so: a step whose update is
        not finite is skipped), else the steps (`divergence_hint`)."""
        bad = self._non_finite_weights()
        if bad:
            return (f"The meta-learner's weights are not finite before the step ({bad}): "
                    "they were set or loaded so, as no step writes a non-finite update. "
                    "Load a good file or rebuild the model.")
        return f"Its input was finite: the steps diverged. {self.divergence_hint()}"

    def _non_finite_weights(self):
        """`"N weights, e.g. <paths>"` of the weights holding a NaN or infinity, or ""."""
        bad = [v.path for v in self.weights
               if keras.backend.is_float_dtype(v.dtype)
               and not np.isfinite(keras.ops.convert_to_numpy(v)).all()]
        return f"{len(bad)} weights, e.g. {', '.join(bad[:3])}" if bad else ""

    def _with_fault_callback(self, kwargs):
        if is_validation_within_fit(kwargs):  # runs with fit's callbacks
            return kwargs
        # Weights set or loaded non-finite: refused before any step. (A NaN behind a
        # ReLU can give finite losses and gradients, so no step would notice.)
        bad = self._non_finite_weights()
        if bad:
            raise guards.TrainingDivergedError(
                f"The meta-learner's weights are not finite ({bad}): they were set or "
                "loaded so. Load a good file or rebuild the model.")
        return guards.with_fault_callback(kwargs, self._guard, self.fault_hint)

    def _raise_if_fault(self, phase, call):
        self._guard.reset()
        result = call()
        self._guard.raise_if_fault(phase, self.fault_hint)
        return result

    def fit(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        return super().fit(x, y, *args, **self._with_fault_callback(kwargs))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        return super().evaluate(x, y, *args, **self._with_fault_callback(kwargs))

    def predict(self, x, *args, **kwargs):
        return super().predict(x, *args, **self._with_fault_callback(kwargs))

    def train_on_batch(self, x=None, y=None, *args, **kwargs):
        return self._raise_if_fault(
            "train", lambda: super(MetaLearner, self).train_on_batch(x, y, *args, **kwargs))

    def test_on_batch(self, x=None, y=None, *args, **kwargs):
        return self._raise_if_fault(
            "evaluation", lambda: super(MetaLearner, self).test_on_batch(x, y, *args, **kwargs))

    # ------------------------------------------------------------------
    # Weights.

    def adapted_model(self, params, state, example_spec=None):
        """A new `keras.Model` like `model`, holding `params` and `state` as its weights
        (`tf_maml.learners.adapted_model`: a clone, or for a subclassed model that
        `get_config` cannot rebuild, an `AdaptedModel` running its computation).

        `example_spec`: the per-example spec to build the copy for, if cloning
        leaves it unbuilt (a subclassed model).
        """
        return adapted_copy(self.model, params, state, example_spec)

    # The RNG seed state of `model` (Dropout's seed generators) is outside
    # Keras' `weights`: without it, a reloaded meta-learner or a resumed run
    # would draw other dropout masks. Saved beside the own variables as `rng_<i>`.

    def _unsaved_state(self):
        saved = {id(v) for v in self.model.weights}
        return [v for v in self.model.non_trainable_variables if id(v) not in saved]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, variable in enumerate(self._unsaved_state()):
            store[f"rng_{i}"] = variable

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if not k.startswith("rng_")})
        for i, variable in enumerate(self._unsaved_state()):
            if f"rng_{i}" in keys:  # files written before tf_maml saved it have none
                variable.assign(store[f"rng_{i}"])


def _within_meta_learning_ops(step):
    @functools.wraps(step)
    def within_ops(self, data):
        with self.meta_learning_ops():
            return step(self, data)

    within_ops.within_meta_learning_ops = True
    return within_ops


def _then_after_init(init):
    @functools.wraps(init)
    def init_then_after(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self).__init__ is init_then_after:  # the outermost __init__ returned
            self._after_init()

    return init_then_after
