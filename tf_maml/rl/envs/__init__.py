"""Task environments as tensors: `reset` and `step` are batched TensorFlow functions.

`GymTaskEnv` (and `HalfCheetahVelocity`, `HalfCheetahDirection`, `MetaWorldML1`,
`HighwayTraffic`) instead run gymnasium environments in Python, behind
`tf.numpy_function`: not pure, not under XLA.
"""

from tf_maml.rl.envs.base import Box, Discrete, TaskEnv, deserialize, serialize
from tf_maml.rl.envs.cartpole import CartPole
from tf_maml.rl.envs.gym_bridge import GymTaskEnv
from tf_maml.rl.envs.half_cheetah import HalfCheetahDirection, HalfCheetahVelocity
from tf_maml.rl.envs.highway import HighwayTraffic
from tf_maml.rl.envs.matrix_game import MatrixGameOpponents
from tf_maml.rl.envs.metaworld_ml1 import MetaWorldML1
from tf_maml.rl.envs.navigation import Navigation2D

__all__ = ["Box", "CartPole", "Discrete", "GymTaskEnv", "HalfCheetahDirection",
           "HalfCheetahVelocity", "HighwayTraffic", "MatrixGameOpponents", "MetaWorldML1",
           "Navigation2D", "TaskEnv", "deserialize", "serialize"]
