"""The meta-learners' common base (`MetaLearner`) and what a member builds on."""

from tf_maml.learners.base import MetaLearner, fixed, flag, hyperparameter

__all__ = ["MetaLearner", "fixed", "flag", "hyperparameter"]
