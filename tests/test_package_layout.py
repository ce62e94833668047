"""The package laid out by layer: imports run one way, and every name docs/api.md documents
keeps working under its documented path."""

import ast
import importlib
import os
import re

import tf_maml

from helpers import ROOT

PACKAGE = os.path.dirname(tf_maml.__file__)

# What each part may never import (docs/concepts.md, "The parts, and which way they depend").
NEVER = {
    "engine": ("learners", "runs", "rl"),
    "rules": ("engine", "learners", "runs", "rl"),
    "data": ("engine", "learners", "runs", "rl", "rules"),
    "keras_patches": ("engine", "learners", "runs", "rl", "rules", "data"),
    "layers.py": ("engine", "learners", "runs", "rl", "rules", "data"),
    "nets.py": ("engine", "learners", "runs", "rl", "rules", "data"),
    "learners": ("runs", "rl"),
}


def imported_parts(path):
    """The tf_maml parts (first component after tf_maml.) that the file at `path` imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    parts = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "tf_maml" and len(pieces) > 1:
                parts.add(pieces[1])
            if pieces[0] == "scripts":
                parts.add("scripts")
    return parts


def test_imports_run_one_way():
    found = []
    for directory, _, files in os.walk(PACKAGE):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            part = os.path.relpath(path, PACKAGE).split(os.sep)[0]
            parts = imported_parts(path)
            for forbidden in NEVER.get(part, ()) + ("scripts",):
                if forbidden in parts:
                    found.append(f"{os.path.relpath(path, PACKAGE)} imports {forbidden}")
    assert not found, "\n".join(found)


def resolve(dotted):
    """The object named `dotted` (tf_maml.a.b.C), importing modules as a user would."""
    pieces = dotted.split(".")
    for cut in range(len(pieces), 0, -1):
        try:
            obj = importlib.import_module(".".join(pieces[:cut]))
        except ImportError:
            continue
        for attribute in pieces[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def test_every_documented_name_resolves_under_its_documented_path():
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    names = sorted(set(re.findall(r"\btf_maml(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text)))
    assert len(names) > 40
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name}: {error}")
    assert not missing, "\n".join(missing)
    for old, new in tf_maml.DOCUMENTED_PATHS.items():  # one module under both paths
        assert importlib.import_module(f"tf_maml.{old}") is importlib.import_module(
            f"tf_maml.{new}")


def test_the_meta_learners_share_the_one_base():
    assert tf_maml.MetaLearner is tf_maml.learners.MetaLearner
    for member in (tf_maml.MAML, tf_maml.FOMAML, tf_maml.MetaSGD, tf_maml.ANIL,
                   tf_maml.MAMLPlusPlus, tf_maml.Reptile, tf_maml.rl.MetaPolicyGradient):
        assert issubclass(member, tf_maml.MetaLearner), member
