"""The MAML family: MAML with a named rule or one real difference each.

| member | what differs from MAML |
|---|---|
| FOMAML | first-order meta-gradients |
| MetaSGD | its rule: `rules.meta_sgd` |
| ANIL | its rule: `rules.masked(rule, adapted=the head)` |
| BOIL | its rule: `rules.masked(rule, adapted=all but the head)` |
| CAVIA | its rule: `rules.masked(rule, adapted=TaskContext layers)`; no meta-gradient for them |
| IMAML | its meta-gradient: implicit, by conjugate gradient; a proximal rule |
| ProtoMAML | its model: a head made per task from the support prototypes (`starting_weights`) |
| MAMLPlusPlus | its rule (`rules.lslr`), a multi-step loss, per-step BatchNorm weights |
| Reptile | its meta-gradient: `theta - theta'` |

`ALGORITHMS` names the classes; runs and searches build them from configs with
the recipes of `tf_maml.runs.members`.
"""

from tf_maml.learners.family.anil import ANIL
from tf_maml.learners.family.boil import BOIL
from tf_maml.learners.family.cavia import CAVIA
from tf_maml.learners.family.fomaml import FOMAML
from tf_maml.learners.family.imaml import IMAML
from tf_maml.learners.family.maml_plus_plus import MAMLPlusPlus, multi_step_loss_weights
from tf_maml.learners.family.meta_sgd import MetaSGD
from tf_maml.learners.family.proto_maml import ProtoMAML
from tf_maml.learners.family.reptile import Reptile
from tf_maml.learners.maml import MAML

ALGORITHMS = {
    "maml": MAML,
    "fomaml": FOMAML,
    "meta_sgd": MetaSGD,
    "anil": ANIL,
    "boil": BOIL,
    "cavia": CAVIA,
    "imaml": IMAML,
    "proto_maml": ProtoMAML,
    "maml_plus_plus": MAMLPlusPlus,
    "reptile": Reptile,
}


def meta_learner_class(algorithm):
    """The class of `algorithm` (a name of `ALGORITHMS`), or a clear error."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}.")
    return ALGORITHMS[algorithm]


__all__ = ["ALGORITHMS", "ANIL", "BOIL", "CAVIA", "FOMAML", "IMAML", "MAML", "MAMLPlusPlus",
           "MetaSGD", "ProtoMAML", "Reptile", "meta_learner_class", "multi_step_loss_weights"]
