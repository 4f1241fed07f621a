"""A model's graph rebuilt from Keras' own classes only, so it loads without kerasmyelin.

The ensemble's ``EnsembleCombiner`` is the only class kerasmyelin puts in a graph. Here each
call of it is replaced by ``ensemble.combine`` applied to the members' symbolic outputs: Keras
records that arithmetic as its built-in operations (Add, Clip, TrueDivide, ...), which
``keras.models.load_model(path, safe_mode=True)`` rebuilds with no custom objects. The rule
itself stays in ``ensemble.combine``, its one home.
"""

from __future__ import annotations


def portable_model(model):
    """The same computation as ``model``, built only from classes that ship with Keras.

    Args:
        model: a functional ``keras.Model`` kerasmyelin built or loaded: the network, the
            ensemble, or a fold average (whose folds may be ensembles).

    Returns:
        A functional ``keras.Model`` with the same named inputs and output, sharing ``model``'s
        weights (no copy). It is not compiled, so it carries no optimizer.

    Raises:
        ValueError: a class from outside Keras is left in the graph.
    """
    import keras

    from kerasmyelin.models.ensemble import combine, combiner_class

    combiner = combiner_class()

    def call(layer, *args, **kwargs):
        if isinstance(layer, combiner):
            young, old = args[0]
            return combine(young, old, layer.rule, layer.blend_months)
        return layer(*args, **kwargs)

    # Returning each layer itself (instead of a fresh copy) keeps the trained weights; recursive
    # reaches the combiner inside a fold average of ensembles.
    rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call,
                                       recursive=True)
    foreign = non_keras_classes(rebuilt)
    if foreign:
        raise ValueError(f"the graph still holds classes from outside Keras: {', '.join(foreign)}")
    return rebuilt


def non_keras_classes(model) -> list[str]:
    """Names of the classes in ``model``'s saved config that do not come with Keras."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            registered = node.get("registered_name")
            module = node.get("module")
            if "class_name" in node and (module and module.split(".")[0] != "keras"
                                         or registered and ">" in str(registered)):
                found.add(str(registered or node["class_name"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    import keras

    walk(keras.saving.serialize_keras_object(model))
    return sorted(found)
