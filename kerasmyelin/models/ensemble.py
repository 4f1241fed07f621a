"""The paper's ensemble: a younger and an older age-range network combined in one Keras graph.

Wada et al. 2019 trained one network on 0-16 months and one on 8-24 months and report the
ensemble's accuracy without saying how the two estimates were combined. Both readings live
here, in ``combine`` and nowhere else:

- "average": the mean of the two estimates.
- "gate": a first-pass estimate (the members' mean) decides how much each member is trusted.
  Below the overlap only the younger member counts, above it only the older one, and across it
  (8-16 months by default) the weight moves smoothly (a smoothstep, so the output has no kink)
  from the younger to the older member.

Which rule is better is measured by ``kerasmyelin evaluate``, not assumed.

Beside the rule sits the other way models are combined here: ``fold_mean``, the mean of a run's
fold models, served when a run has no model trained on every infant.
"""

from __future__ import annotations

from kerasmyelin.models.graph import shared_inputs

RULES = ("average", "gate")


def gate_weight(first_pass, low: float, high: float):
    """Weight of the older member for a first-pass age estimate (months): 0 below ``low``,
    1 above ``high``, smoothstep between."""
    from keras import ops

    t = ops.clip((first_pass - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def combine(young, old, rule: str, blend_months: tuple[float, float]):
    """The ensemble's estimate from the members' (batch, 1) estimates in months."""
    if rule == "average":
        return 0.5 * (young + old)
    if rule == "gate":
        w = gate_weight(0.5 * (young + old), float(blend_months[0]), float(blend_months[1]))
        return (1.0 - w) * young + w * old
    raise ValueError(f"unknown combining rule {rule!r}; use one of {RULES}")


def _combiner_class():
    import keras

    @keras.saving.register_keras_serializable(package="kerasmyelin")
    class EnsembleCombiner(keras.layers.Layer):
        """Keras layer around ``combine``: [(batch, 1) younger, (batch, 1) older] -> (batch, 1)."""

        def __init__(self, rule: str = "gate", blend_months=(8.0, 16.0), **kwargs):
            super().__init__(**kwargs)
            if rule not in RULES:
                raise ValueError(f"unknown combining rule {rule!r}; use one of {RULES}")
            self.rule = rule
            self.blend_months = (float(blend_months[0]), float(blend_months[1]))

        def call(self, inputs):
            young, old = inputs
            return combine(young, old, self.rule, self.blend_months)

        def compute_output_shape(self, input_shape):
            return input_shape[0]

        def get_config(self):
            return {**super().get_config(), "rule": self.rule, "blend_months": list(self.blend_months)}

    return EnsembleCombiner


_COMBINER = None


def combiner_class():
    """The ``EnsembleCombiner`` layer class (made once, when Keras is first needed)."""
    global _COMBINER
    if _COMBINER is None:
        _COMBINER = _combiner_class()
    return _COMBINER


def combiner_layer(rule: str, blend_months, name: str = "ensemble_age"):
    """An ``EnsembleCombiner`` layer."""
    return combiner_class()(rule=rule, blend_months=blend_months, name=name)


def register_custom_objects() -> None:
    """Make ``EnsembleCombiner`` known to ``keras.models.load_model`` (safe_mode stays on)."""
    combiner_class()


def build_ensemble(members, rule: str = "gate", blend_months=(8.0, 16.0), name: str = "myelin_ensemble"):
    """One functional Keras graph over two trained members.

    Args:
        members: [(name, keras.Model), ...], the younger member first; both take the same named
            inputs (the ten, or one contrast's five) and return (batch, 1) age in months.
        rule: "average" or "gate" (see module docstring).
        blend_months: (low, high) of the gate's hand-over.
        name: the model's name.

    Returns:
        ``keras.Model`` taking the members' named (batch, size, size, 1) inputs, returning
        (batch, 1) months. Its members are nested models and keep their own names.
    """
    import keras

    if len(members) != 2:
        raise ValueError(f"the ensemble combines two members (younger, older), got {len(members)}")
    names = [m.name for _, m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member models need distinct names (build them with name=...), got {names}")
    inputs = shared_inputs([m for _, m in members], "ensemble members")
    estimates = [model(inputs) for _, model in members]
    age = combiner_layer(rule, blend_months)(estimates)
    return keras.Model(inputs=inputs, outputs=age, name=name)


def fold_mean(models, name: str = "fold_average"):
    """One functional Keras graph: the mean of several trained models' estimates (the fold
    models of a cross-validated run without a model trained on every infant).

    The models take the same inputs (the ten, or one contrast's five), and are renamed
    ``fold_{i}_{name}`` (nested models need distinct names)."""
    import keras

    if not models:
        raise ValueError("fold_mean needs at least one model")
    if len(models) == 1:
        return models[0]
    inputs = shared_inputs(models, "fold models")
    for i, m in enumerate(models):
        m.name = f"fold_{i}_{m.name}"
    out = keras.layers.Average(name="fold_mean")([m(inputs) for m in models])
    return keras.Model(inputs, out, name=name)
