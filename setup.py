"""tf_maml: MAML-family meta-learning as a Keras 3 / TensorFlow plugin."""

from setuptools import find_packages, setup

setup(
    name="tf_maml",
    version="0.1.0",
    description="Meta-learning of the MAML family through keras.Model.fit, on TensorFlow.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_maml", "tf_maml.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "h5py",  # tf_maml.checkpoints reads and marks backups (Keras depends on it too)
        "tensorboard>=2.20",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "keras-tuner>=1.4",
        "absl-py>=2.0",
        "ml-collections>=1.0",
        "matplotlib>=3.8",
        "pillow>=10",
    ],
    extras_require={
        # The gymnasium bridge and MuJoCo's half-cheetah (tf_maml.rl.envs); the rest of
        # tf_maml.rl needs neither.
        "rl": ["gymnasium[mujoco]>=1.1"],
        # Meta-World's ML1 skills (tf_maml.rl.envs.MetaWorldML1, configs/metaworld.py).
        "metaworld": ["gymnasium[mujoco]>=1.1", "metaworld>=3.1"],
        # highway-env's driving (tf_maml.rl.envs.HighwayTraffic, configs/highway.py).
        "driving": ["highway-env>=1.10"],
        "test": ["pytest>=8", "pytest-xdist>=3", "gymnasium[mujoco]>=1.1", "metaworld>=3.1",
                 "highway-env>=1.10"],
    },
)
