"""tf_maml: MAML-family meta-learning as a Keras 3 / TensorFlow plugin."""

import os

# tf_maml runs on TensorFlow; choose that backend unless the user chose one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tf_maml needs Keras on the TensorFlow backend; Keras is running on "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing "
        "keras (or import tf_maml first)."
    )

import importlib  # noqa: E402
import sys  # noqa: E402

from tf_maml import data  # noqa: E402
from tf_maml import episodes  # noqa: E402
from tf_maml import layers  # noqa: E402
from tf_maml import learners  # noqa: E402
from tf_maml import nets  # noqa: E402
from tf_maml import rl  # noqa: E402
from tf_maml import rules  # noqa: E402
from tf_maml.keras_patches import exact_second_order  # noqa: E402
from tf_maml.learners import family  # noqa: E402
from tf_maml.learners.base import MetaLearner  # noqa: E402
from tf_maml.learners.family import (  # noqa: E402
    ANIL, BOIL, CAVIA, FOMAML, IMAML, MAMLPlusPlus, MetaSGD, ProtoMAML, Reptile,
)
from tf_maml.learners.maml import MAML  # noqa: E402
from tf_maml.learners.objective import TaskObjective  # noqa: E402
from tf_maml.learners.request_guards import (  # noqa: E402
    AdaptationDivergedError, NonFiniteInputError,
)
from tf_maml.runs import tuning  # noqa: E402

# The package is laid out by layer (docs/concepts.md, "The parts"); the modules
# docs/api.md documents keep working under their documented paths.
DOCUMENTED_PATHS = {
    "checkpoints": "runs.checkpoints",
    "evaluation": "runs.step_curves",
    "experiment": "runs.experiment",
    "family": "learners.family",
    "guards": "learners.guards",
    "inner_loop": "engine.inner_loop",
    "labels": "learners.labels",
    "tuning": "runs.tuning",
}
for _old, _new in DOCUMENTED_PATHS.items():
    sys.modules[f"{__name__}.{_old}"] = globals()[_old] = importlib.import_module(
        f"{__name__}.{_new}")

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "AdaptationDivergedError",
    "BOIL",
    "CAVIA",
    "IMAML",
    "ProtoMAML",
    "FOMAML",
    "MAML",
    "MAMLPlusPlus",
    "MetaLearner",
    "MetaSGD",
    "NonFiniteInputError",
    "Reptile",
    "TaskObjective",
    "data",
    "episodes",
    "exact_second_order",
    "family",
    "layers",
    "learners",
    "nets",
    "rl",
    "rules",
    "tuning",
]
