"""The backbones of tf_maml.nets: their structure, and that they meta-train."""

import keras
import numpy as np
import pytest

import tf_maml

from helpers import MEMBERS, as_float32, classification_episode, sparse_ce


def test_resnet12_has_the_metaoptnet_structure():
    net = tf_maml.nets.resnet12(5)
    assert net.output_shape == (None, 5)
    convolutions = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convolutions if c.kernel_size == (3, 3)] == (
        [64] * 3 + [160] * 3 + [320] * 3 + [640] * 3
    )
    assert sum(c.kernel_size == (1, 1) for c in convolutions) == 4  # one shortcut per block
    assert net.count_params() == 12_436_997  # MetaOptNet's ResNet-12: 12.4 million
    assert isinstance(net.get_layer("block4_pool"), keras.layers.MaxPooling2D)


def test_small_resnet12_meta_trains_and_adapts():
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=2, image=(16, 16, 3)))
    net = tf_maml.nets.resnet12(3, input_shape=(16, 16, 3), filters=(4, 4, 8, 8))
    maml = tf_maml.MAML(net, inner_lr=0.1, inner_steps=1)
    maml.compile(optimizer="adam", loss=sparse_ce(), metrics=["accuracy"])
    before = maml.get_weights()
    logs = maml.train_on_batch(*episode, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert max(np.abs(a - b).max() for a, b in zip(before, maml.get_weights())) > 1e-5
    (support_x, support_y), (query_x, _) = episode
    assert maml.adapt(support_x[0], support_y[0]).predict(query_x[0], verbose=0).shape == (6, 3)


# The members whose adapted weights or meta-gradient differ from MAML's in form (a
# masked head, a weight difference); the suite's time allows no more on this net.
@pytest.mark.parametrize("member", ["anil", "reptile_adam"])
def test_family_members_meta_train_a_small_resnet12(member):
    episode = as_float32(classification_episode(np.random.default_rng(0), tasks=2, image=(16, 16, 3)))
    maml = MEMBERS[member](tf_maml.nets.resnet12(3, input_shape=(16, 16, 3), filters=(4, 4, 8, 8)))
    maml.compile(optimizer="adam", loss=sparse_ce())
    before = maml.get_weights()
    assert np.isfinite(maml.train_on_batch(*episode, return_dict=True)["loss"])
    assert max(np.abs(a - b).max() for a, b in zip(before, maml.get_weights())) > 1e-5


def test_backbone_arguments_are_checked():
    with pytest.raises(ValueError, match="4 blocks"):
        tf_maml.nets.resnet12(5, filters=(64, 160, 320))
    with pytest.raises(ValueError, match="normalization"):
        tf_maml.nets.resnet12(5, normalization="layer")


def test_conv4_context_enters_the_third_block_and_cavia_adapts_only_it():
    net = tf_maml.nets.conv4(3, input_shape=(16, 16, 1), filters=4, context=2)
    contexts = [i for i, layer in enumerate(net.layers)
                if isinstance(layer, tf_maml.layers.TaskContext)]
    assert len(contexts) == 1 and net.layers[contexts[0] + 1].input.shape[-1] == 4 + 2
    assert len([layer for layer in net.layers[:contexts[0]]
                if isinstance(layer, keras.layers.Conv2D)]) == 2
    cavia = tf_maml.CAVIA(net, inner_lr=1.0)
    cavia.compile(optimizer="adam", loss=sparse_ce())
    (support_x, support_y), _ = as_float32(
        classification_episode(np.random.default_rng(1), tasks=1, image=(16, 16, 1)))
    adapted = cavia.adapt(support_x[0], support_y[0])
    changed = [np.abs(a.numpy() - b.numpy()).max() > 0
               for a, b in zip(adapted.trainable_variables, net.trainable_variables)]
    assert changed == [v.path.endswith("context") for v in net.trainable_variables]
    assert any(changed)
