"""Plain objects that save as Keras objects do: their config is their constructor's arguments."""


class Configurable:
    """`get_config`, `from_config` and a `repr` from the constructor's arguments.

    Subclasses return their arguments from `get_config`; with
    `keras.saving.register_keras_serializable` they then save and load with
    `keras.saving.serialize_keras_object` (update rules, task environments).
    """

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"
