"""Keras internals are read in tf_maml/keras_patches/ only.

Every `keras.src` import, and every private Keras attribute, method or
argument (a name starting with one underscore that Keras' models, layers,
optimizers, compiled losses and metrics hold), is fenced there, behind a
name of its own: a new Keras version then breaks in one place, which
`tf_maml.keras_patches` documents.
"""

import ast
import inspect
import os
import re

import keras
import numpy as np

import tf_maml

PACKAGE = os.path.dirname(tf_maml.__file__)
FENCE = os.path.join(PACKAGE, "keras_patches")


def keras_private_names():
    """Private names of a compiled, fitted Keras model and the objects it holds."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)
    objects = [model, model.optimizer, model.layers[0], model.metrics[0],
               model.metrics[-1]] + [getattr(model, name) for name in
                                     ("_compile_loss", "_compile_metrics")]
    names = set()
    for obj in objects:
        names.update(vars(obj))
        for cls in type(obj).__mro__:
            if cls.__module__.startswith("keras"):
                names.update(vars(cls))
                for member in vars(cls).values():  # private arguments (fit's, evaluate's...)
                    if inspect.isfunction(member):
                        names.update(inspect.signature(member).parameters)
                        names.update(re.findall(r"[\"'](_[a-z]\w*)[\"']",
                                                inspect.getsource(member)))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def reaches_into_keras(tree, private):
    """`(line, what)` of each import of keras.src and each use of a private Keras name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras.src"):
            yield node.lineno, f"import from {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras.src"):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.Attribute) and node.attr in private:
            yield node.lineno, f"attribute {node.attr}"
        elif isinstance(node, ast.FunctionDef) and node.name in private:
            yield node.lineno, f"override of {node.name}"
        elif isinstance(node, ast.keyword) and node.arg in private:
            yield node.lineno, f"argument {node.arg}"
        elif isinstance(node, ast.Constant) and node.value in private:
            yield node.lineno, f"name {node.value!r}"


def test_keras_internals_are_read_in_keras_patches_only():
    private = keras_private_names()
    assert {"_compile_loss", "_maybe_symbolic_build", "_use_cached_eval_dataset"} <= private
    found = []
    for directory, _, files in os.walk(PACKAGE):
        if directory.startswith(FENCE):
            continue
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            found += [f"{os.path.relpath(path, PACKAGE)}:{line}: {what}"
                      for line, what in reaches_into_keras(tree, private)]
    assert not found, "Keras internals outside tf_maml/keras_patches:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for():
    tree = ast.parse(
        "from keras.src import backend\nimport keras.src.ops\nmodel._compile_loss\n"
        "class M:\n    def _maybe_symbolic_build(self):\n        pass\n"
        "model.evaluate(_use_cached_eval_dataset=True)\nkwargs.get('_compile_metrics')\n"
        "model._own_attribute\n")
    found = [what.split()[0] for _, what in reaches_into_keras(tree, keras_private_names())]
    assert found.count("import") == 2
    assert sorted(found[2:]) == ["argument", "attribute", "name", "override"]
