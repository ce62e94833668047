"""Meta-reinforcement learning: MAML for policies, with environments written in TensorFlow.

`tf_maml.rl.envs` holds task environments whose `reset` and `step` are
batched TensorFlow functions of a task parameter (`Navigation2D`, the MAML
paper's 2D navigation); `task_batches` draws batches of tasks as a tf.data
pipeline; `MetaPolicyGradient` is the `keras.Model` whose `fit` meta-trains
a policy network (`policies.mlp`).
"""

from tf_maml.rl import advantages, distributions, envs, objectives, policies, rollouts
from tf_maml.rl.meta_policy_gradient import MetaPolicyGradient
from tf_maml.rl.tasks import task_batches

__all__ = ["MetaPolicyGradient", "advantages", "distributions", "envs", "objectives",
           "policies", "rollouts", "task_batches"]
