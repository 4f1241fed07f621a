"""A trained model's inference (and its input gradients) as TensorFlow graphs, traced once per model.

In a graph TensorFlow fuses each convolution with its bias and ReLU: ~3-4x the eager rate
(``benchmarks/bench_kernels.py``). Each graph takes any batch size and is cached per model
object; the cache holds the model weakly, so dropping the model frees its graphs too.
"""

from __future__ import annotations

import weakref

from kerasmyelin.levels import contrast_input_names, contrasts_of

_GRAPHS: dict[str, weakref.WeakKeyDictionary] = {"forward": weakref.WeakKeyDictionary(),
                                                 "gradients": weakref.WeakKeyDictionary()}


def model_input_names(model) -> list[str]:
    """The names of a Keras model's inputs (without TensorFlow's ":0" suffix)."""
    return [t.name.split(":")[0] for t in model.inputs]


def shared_inputs(models, what: str = "models") -> dict:
    """One ``keras.Input`` per input of ``models``, which must all take the same named inputs
    (the ten, or one contrast's five) at the same size: the inputs of a graph over them all.

    Raises:
        ValueError: the models take different inputs or image sizes.
    """
    import keras

    wanted = None
    for model in models:
        names = (tuple(sorted(model_input_names(model))), int(model.inputs[0].shape[1]))
        if wanted is not None and names != wanted:
            raise ValueError(f"{what} must take the same inputs at the same size: {model.name!r} takes "
                             f"{list(names[0])} at {names[1]}, another {list(wanted[0])} at {wanted[1]}")
        wanted = names
    names, size = wanted
    return {n: keras.Input(shape=(size, size, 1), name=n) for n in contrast_input_names(contrasts_of(names))}


def _traced(model, kind: str, body):
    """``body(model, inputs)`` as a ``tf.function`` over a dict of float32 inputs with a free
    batch size, made once per (model, kind)."""
    cache = _GRAPHS[kind]
    fn = cache.get(model)
    if fn is None:
        import tensorflow as tf

        spec = {name: tf.TensorSpec((None, *t.shape[1:]), tf.float32)
                for name, t in zip(model_input_names(model), model.inputs)}
        ref = weakref.ref(model)  # the cache must not keep the model alive
        # autograph off: there is no Python control flow to convert, and converting a lambda
        # only prints a warning that its source cannot be parsed.
        fn = tf.function(lambda inputs: body(ref(), inputs), input_signature=[spec], autograph=False)
        cache[model] = fn
    return fn


def _forward(model, inputs):
    return model(inputs, training=False)


def _ages_and_gradients(model, inputs):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        ages = model(inputs, training=False)
    # Infants in a batch are independent, so the gradient of the batch's sum is each infant's
    # own gradient. An input the model ignores has a zero gradient.
    return ages, tape.gradient(ages, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def graph_forward(model):
    """inputs dict -> (batch, 1) ages in months."""
    return _traced(model, "forward", _forward)


def graph_gradients(model):
    """inputs dict -> ((batch, 1) ages, {name: d age / d input, shaped like the input})."""
    return _traced(model, "gradients", _ages_and_gradients)


def is_traced(model, kind: str = "forward") -> bool:
    """Whether ``model`` has a cached graph of that kind (for tests of the cache)."""
    return model in _GRAPHS[kind]
