"""Members whose rule adapts chosen layers only: ANIL, BOIL, CAVIA."""

from tf_maml import rules
from tf_maml.learners.arguments import checked_rule
from tf_maml.learners.maml import MAML


class MaskedMember(MAML):
    """MAML whose rule is `rules.masked(rule, adapted)`: the given (or `sgd(inner_lr)`)
    rule on the layers `adapted` selects; the others are meta-trained by the outer update
    only. A subclass passes its `adapted` predicate (or layer names) and saves what makes
    it as its own constructor argument; the saved rule is the unmasked one.
    """

    def __init__(self, model, adapted, inner_lr=None, inner_optimizer=None, **kwargs):
        rule, inner_lr = checked_rule(inner_optimizer, inner_lr)
        super().__init__(model, inner_optimizer=rules.masked(rule, adapted), **kwargs)
        self._inner_lr = inner_lr

    def inner_rule(self, rule):
        return rules.masked(rule, self.inner_optimizer.adapted)  # the same layers adapt

    def _rule_config(self):
        if self.inner_lr is not None:
            return None
        return rules.serialize(self.inner_optimizer.rule)  # the mask is the member's argument
