"""Hyper-parameter search for meta-learners with keras-tuner."""

import math

import keras_tuner

from tf_maml.learners.guards import TrainingDivergedError
from tf_maml.runs import members

# The members a search chooses from by default (FOMAML is MAML's first_order choice
# here; CAVIA and ProtoMAML need a backbone of their own kind, iMAML more inner steps
# than the search's: name them in `algorithms`).
ALGORITHMS = tuple(name for name, recipe in members.RECIPES.items() if recipe.searched)


class MetaLearnerHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` whose `build(hp)` returns a compiled meta-learner.

    The default search space, declared where each value is used:

    | name | values |
    |---|---|
    | `algorithm` | `algorithms` (default `ALGORITHMS`: maml, meta_sgd, anil, boil, maml_plus_plus, reptile; also cavia, imaml, proto_maml when named) |
    | `inner_lr` | 1e-3 .. 1, log scale |
    | `inner_steps` | 1 .. 5 |
    | `first_order` | False / True (MAML, ANIL, BOIL, CAVIA, ProtoMAML) |
    | `proximal_weight` | 0.1 .. 10, log scale (iMAML) |
    | `outer_lr` | 1e-4 .. 1e-2, log scale (Reptile: its epsilon, 0.05 .. 1) |

    Narrow or extend it with keras-tuner's own means: fix values with
    `hp.Fixed` in the tuner's `hyperparameters=` (and
    `tune_new_entries=False` to fix everything else at its default), or
    subclass and override `build`.

    The objective is the post-adaptation validation metric that `fit` logs:
    `"val_accuracy"` (max) for classification, `"val_loss"` (min) otherwise;
    `objective()` gives it.

    A trial whose meta-training diverges (a non-finite meta-loss, gradient
    or validation loss), or whose adaptation makes the validation loss more
    than `EXPLODING_RATIO` times worse than before adapting, is reported to
    the tuner as failed (`keras_tuner.errors.FailedTrialError`), so it is
    never chosen as best.

    Args:
        build_model: callable returning a fresh Keras model (the backbone).
        loss: the task loss, as for `compile`.
        metrics: metrics, as for `compile`.
        algorithms: the algorithms to search over: names of `tf_maml.runs.members.RECIPES`.
        eval_inner_steps: inner steps at validation (default: as training).

    Example:

    ```python
    hypermodel = tf_maml.tuning.MetaLearnerHyperModel(
        lambda: tf_maml.nets.mlp(hidden=(40, 40)), loss="mse")
    tuner = keras_tuner.RandomSearch(hypermodel, objective=hypermodel.objective(),
                                     max_trials=20, directory="tuning", project_name="sinusoid")
    tuner.search(train_episodes, steps_per_epoch=500, epochs=4, validation_data=val_episodes)
    best = tuner.get_best_models(1)[0]        # ready to adapt() and export_adaptive()
    ```
    """

    # Adaptation that multiplies the query loss by more than this diverges.
    EXPLODING_RATIO = 100.0

    def __init__(self, build_model, loss, metrics=None, algorithms=ALGORITHMS,
                 eval_inner_steps=None, **kwargs):
        super().__init__(**kwargs)
        unknown = sorted(set(algorithms) - set(members.RECIPES))
        if unknown or not algorithms:
            raise ValueError(f"`algorithms` must be drawn from {tuple(members.RECIPES)}; "
                             f"received {algorithms!r}.")
        self.build_model = build_model
        self.loss = loss
        self.metrics = list(metrics or [])
        self.algorithms = tuple(algorithms)
        self.eval_inner_steps = eval_inner_steps

    def objective(self):
        """The tuner objective: post-adaptation validation accuracy, or loss."""
        if "accuracy" in self.metrics:
            return keras_tuner.Objective("val_accuracy", direction="max")
        return keras_tuner.Objective("val_loss", direction="min")

    def build(self, hp):
        algorithm = hp.Choice("algorithm", list(self.algorithms))
        inner_lr = hp.Float("inner_lr", 1e-3, 1.0, sampling="log")
        inner_steps = hp.Int("inner_steps", 1, 5)
        # The rest of the space is the member's (tf_maml.runs.members), each name active
        # only for the algorithms that use it: a MAML++ trial shows no first_order.
        users = {}
        for name in self.algorithms:
            for declared in members.recipe(name).tuned_names():
                users.setdefault(declared, []).append(name)
        meta_learner, optimizer = members.recipe(algorithm).tuned(
            _Scoped(hp, users), self.build_model(), inner_lr=inner_lr,
            inner_steps=inner_steps, eval_inner_steps=self.eval_inner_steps)
        meta_learner.compile(optimizer=optimizer, loss=self.loss, metrics=self.metrics)
        return meta_learner

    def fit(self, hp, model, *args, **kwargs):
        """`model.fit`, with a diverging trial reported as failed."""
        try:
            history = model.fit(*args, **kwargs)
        except TrainingDivergedError as error:
            # One exception in keras-tuner's trial message (it keeps the traceback).
            raise keras_tuner.errors.FailedTrialError(
                f"Meta-training diverged: {error}") from None
        logs = {name: values[-1] for name, values in history.history.items() if values}
        for name, value in logs.items():
            if not math.isfinite(value):
                raise keras_tuner.errors.FailedTrialError(f"{name} is {value}: the trial diverged.")
        after, before = logs.get("val_loss"), logs.get("val_pre_adaptation_loss")
        if after is not None and before is not None and after > self.EXPLODING_RATIO * max(before, 1e-12):
            raise keras_tuner.errors.FailedTrialError(
                f"Adaptation explodes: the validation loss after adaptation ({after:.3g}) is more "
                f"than {self.EXPLODING_RATIO:g} times the loss before it ({before:.3g})."
            )
        return history


class _Scoped:
    """`hp` whose declaration of each name in `users` is conditional on the algorithms
    that use it (keras-tuner's `conditional_scope`: inactive, it is left out of the
    trial's values)."""

    _DECLARATIONS = ("Boolean", "Choice", "Fixed", "Float", "Int")

    def __init__(self, hp, users):
        self._hp, self._users = hp, users

    def __getattr__(self, attribute):
        method = getattr(self._hp, attribute)
        if attribute not in self._DECLARATIONS:
            return method

        def declare(name, *args, **kwargs):
            if name not in self._users:
                return method(name, *args, **kwargs)
            with self._hp.conditional_scope("algorithm", self._users[name]):
                return method(name, *args, **kwargs)

        return declare


def best_completed_trials(tuner, num_trials=1):
    """The best trials that completed, best first; never a failed one.

    keras-tuner's `get_best_trials` (and so `get_best_hyperparameters` and
    `get_best_models`) fills the list with failed trials when too few
    completed: a search whose every trial diverged would name one as best.
    """
    completed = keras_tuner.engine.trial.TrialStatus.COMPLETED
    trials = tuner.oracle.get_best_trials(len(tuner.oracle.trials))
    return [t for t in trials if t.status == completed][:num_trials]
