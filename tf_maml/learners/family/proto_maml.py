"""Proto-MAML (Triantafillou et al., 2020): a linear head made from the support prototypes."""

import keras
import numpy as np
import tensorflow as tf

from tf_maml.engine.inner_loop import stateless_forward
from tf_maml.keras_patches import call_has_training_arg
from tf_maml.learners import fixed, hyperparameter
from tf_maml.learners.arguments import checked_int, checked_rule
from tf_maml.learners.entry_checks import model_inputs
from tf_maml.learners.family.masked import MaskedMember

HEAD = "prototype_head"


def _head(num_classes):
    return keras.layers.Dense(num_classes, kernel_initializer="zeros", name=HEAD)


def prototype_classifier(embedding, num_classes):
    """ProtoMAML's model: `embedding`, then a linear head of `num_classes` logits (the
    layer `prototype_head`, zeros outside a task: every class equally likely).

    Functional where `embedding` has inputs (it shows its layers, clones and
    exports as such), else a `PrototypeClassifier`.
    """
    num_classes = checked_int(num_classes, "num_classes", 2)
    inputs = model_inputs(embedding)
    name = f"{embedding.name}_prototypes"
    if inputs is None:
        return PrototypeClassifier(embedding, num_classes, name=name)
    fresh = tf.nest.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), inputs)
    features = embedding(fresh)
    _check_features(embedding, features.shape)
    return keras.Model(fresh, _head(num_classes)(features), name=name)


def embedding_and_head(model):
    """The two layers of a `prototype_classifier`."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    head = model.get_layer(HEAD)
    (embedding,) = [layer for layer in layers if layer is not head]
    return embedding, head


@keras.saving.register_keras_serializable(package="tf_maml")
class PrototypeClassifier(keras.Model):
    """`prototype_classifier` for a subclassed embedding (one without inputs)."""

    def __init__(self, embedding, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.num_classes = num_classes
        self.head = _head(num_classes)

    def call(self, inputs, training=None):
        kwargs = {"training": training} if call_has_training_arg(self.embedding) else {}
        features = self.embedding(inputs, **kwargs)
        _check_features(self.embedding, features.shape)
        return self.head(features)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "embedding": keras.saving.serialize_keras_object(self.embedding)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["embedding"] = keras.saving.deserialize_keras_object(
            config["embedding"], custom_objects=custom_objects)
        return cls(**config)


def prototype_head(features, labels, weights, num_classes, absent_bias):
    """ProtoNet's classifier as a linear layer: `(kernel [d, K], bias [K])`.

    Class k's logit is `2 c_k . x - ||c_k||^2`, `c_k` the mean feature of its
    support examples (weighted by `weights`, 0 marking padding): the softmax
    equals ProtoNet's over squared distances. A class without support examples
    gets kernel 0 and bias `absent_bias`, so no probability.
    """
    if labels.shape.rank == 2 and labels.shape[-1] == 1 and num_classes != 1:
        labels = labels[:, 0]
    if labels.shape.rank == 1:
        members = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=features.dtype)
    else:
        members = tf.cast(labels, features.dtype)  # one-hot (or soft) labels
    if weights is not None:
        members *= tf.cast(weights, features.dtype)[:, None]
    counts = tf.reduce_sum(members, axis=0)
    prototypes = tf.math.divide_no_nan(tf.matmul(members, features, transpose_a=True),
                                       counts[:, None])
    bias = tf.where(counts > 0, -tf.reduce_sum(tf.square(prototypes), axis=1),
                    tf.cast(absent_bias, features.dtype))
    return 2.0 * tf.transpose(prototypes), bias


def _check_features(embedding, shape):
    if len(shape) != 2:
        raise ValueError(
            f"ProtoMAML's embedding must return one feature vector per example, [batch, "
            f"features]; {embedding.name!r} returns shape {tuple(shape)}. End it with "
            "keras.layers.Flatten() or a global pooling layer.")


class _Adapted:
    """ProtoMAML's `adapted` predicate: every layer, or the head only."""

    def __init__(self, head_only):
        self.head_only = head_only

    def __call__(self, layer):
        return not self.head_only or layer.name == HEAD

    def __repr__(self):
        return "the prototype head" if self.head_only else "every layer"


@keras.saving.register_keras_serializable(package="tf_maml")
class ProtoMAML(MaskedMember):
    """Proto-MAML: MAML on `embedding` plus a linear head made per task from the support
    prototypes, so that before adaptation it is ProtoNet's classifier.

    In every task the head (`prototype_classifier`'s layer `prototype_head`)
    starts at weights `2 c_k` and bias `-||c_k||^2`, `c_k` the mean embedding
    of class k's support examples (in training mode, padding ignored); then
    the inner loop adapts the embedding and the head (or the head only, with
    `head_only`). The meta-gradient flows through the prototypes into the
    embedding, with `first_order` too (the paper's fo-Proto-MAML); the head's
    own variables are never meta-trained. Classes without a support example
    (padded variable-way episodes) get bias `-1e15` (with a float16 compute
    dtype, -8188) and kernel 0: no probability, before and after adaptation.

    Args:
        embedding: any `keras.Model` returning one feature vector per example,
            `[batch, features]`.
        num_classes: the head's logits: the most ways a task has.
        head_only: adapt only the head in the inner loop (cheaper; the
            embedding is meta-trained by the outer update only).
        inner_lr, inner_optimizer: the inner rule (default `sgd(inner_lr)`).
        **kwargs: as `MAML` (`inner_steps`, `first_order`, `transductive`, ...).

    Example:

    ```python
    embedding = tf_maml.nets.without_head(tf_maml.nets.conv4(5))  # conv4 up to Flatten
    proto = tf_maml.ProtoMAML(embedding, num_classes=5, inner_lr=0.1, first_order=True)
    proto.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```

    `call` (and `predict` on plain inputs) outside a task use the stored
    head, zeros: use `adapt`, `predict` on episodes or `export_adaptive`.
    """

    model_argument = "embedding"

    def __init__(self, embedding, num_classes, head_only=False, inner_lr=None,
                 inner_optimizer=None, **kwargs):
        if not isinstance(embedding, keras.Model):
            raise TypeError(f"`embedding` must be a keras.Model; received "
                            f"{type(embedding).__name__}.")
        checked_rule(inner_optimizer, inner_lr)  # its errors before the model's
        model = prototype_classifier(embedding, num_classes)
        super().__init__(model, _Adapted(bool(head_only)), inner_lr, inner_optimizer, **kwargs)
        self.head_only = bool(head_only)

    head_only = hyperparameter(
        "head_only", fixed("head_only", "it makes the inner rule's mask"),
        "True: only the head adapts in the inner loop.")

    @property
    def num_classes(self):
        """The head's logits (fixed when made: the model's shape)."""
        return embedding_and_head(self.model)[1].units

    def build_member(self):
        def positions(variables, of):
            index = {id(v): i for i, v in enumerate(variables)}
            return [index[id(v)] for v in of]

        model = self.model
        self._embedding, head = embedding_and_head(model)
        self._kernel_position, self._bias_position = positions(model.trainable_variables,
                                             [head.kernel, head.bias])
        self._embedding_params = positions(model.trainable_variables,
                                           self._embedding.trainable_variables)
        self._embedding_state = positions(model.non_trainable_variables,
                                          self._embedding.non_trainable_variables)
        # Finite in the compute dtype, its square summed over classes finite too.
        compute = np.finfo(keras.backend.standardize_dtype(head.compute_dtype))
        self._absent_bias = -min(1e15, float(compute.max) / 8)

    def starting_weights(self, params, state, support_x, support_y, support_weight):
        features = self.support_features(params, state, support_x, support_weight)
        kernel, bias = prototype_head(
            tf.cast(features, params[self._kernel_position].dtype), support_y, support_weight,
            self.num_classes, self._absent_bias)
        params = list(params)
        params[self._kernel_position], params[self._bias_position] = kernel, bias
        return params

    def support_features(self, params, state, support_x, support_weight=None):
        """The embedding of the support examples under `params`, in training mode as the
        inner steps see them (BatchNorm with the support set's statistics, padding ignored)."""
        features, _ = stateless_forward(
            self._embedding, [params[i] for i in self._embedding_params],
            [state[i] for i in self._embedding_state], support_x, True, support_weight)
        return features

    def get_config(self):
        config = super().get_config()
        config["embedding"] = keras.saving.serialize_keras_object(
            embedding_and_head(self.model)[0])
        return {**config, "num_classes": self.num_classes, "head_only": self.head_only}
