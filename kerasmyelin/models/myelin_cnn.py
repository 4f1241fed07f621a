"""The ten-input CNN of Wada et al. 2019 (Figure 2), as a plain functional Keras model.

Reading of Figure 2 and section 2.4 ("Eight layers CNN ... 2 convolutional layers and 6 fully
connected layers"):

- Each of the ten 128x128x1 slices (T1w and T2w at levels a-e) has its own branch:
  Conv 5x5, 16 maps, valid padding, stride 1, ReLU -> MaxPool 2x2 (stride 2) -> Conv 5x5, 8 maps,
  ReLU -> MaxPool 2x2 -> 29x29x8 feature maps -> Dense 100, ReLU.
  (128 -> 124 -> 62 -> 58 -> 29 with valid padding, as the paper states.)
- The five T1w branch outputs are concatenated (500) -> Dense 100 -> Dense 100, ReLU; the T2w
  side likewise (the paper draws the T1w side and says the result is "concatenated with output
  from T2 weighted images"; we read the two sides as symmetric).
- Both sides are concatenated (200) -> Dense 200 -> Dense 50 -> Dense 25, ReLU -> Dense 1,
  linear: the age in months.

Branches do not share weights (each level shows different anatomy). With valid padding this
model has 6,937,191 parameters (pinned in tests).

``ModelConfig.contrasts`` of ("T1w",) or ("T2w",) builds a single-contrast network: that
contrast's five branches -> its side layers -> the joint layers -> ``age``, with no
``joint_concat`` (there is one side to join). Every layer keeps the name it has in the full
network, so weights copy between the two by layer name; the inputs are that contrast's five. Every layer is named ``{block}_{op}``, so the
summary reads like Figure 2: ``t1w_a_conv1`` ... ``t1w_dense2``, ``joint_dense1`` ... ``age``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kerasmyelin.levels import CONTRASTS, LEVEL_KEYS, check_contrasts, input_name

PADDINGS = ("valid", "same")
# Neural Network Console initialises with a Gaussian Glorot (Xavier) distribution; Keras
# defaults to the uniform one.
INITIALIZERS = {"glorot_uniform": "glorot_uniform", "nnc_gaussian_glorot": "glorot_normal"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options; the defaults are the paper's.

    Attributes:
        image_size: side of each square input slice in pixels (paper: 128).
        conv_filters: maps of the two convolutions (paper: 16, 8).
        kernel_size: convolution kernel side (paper: 5).
        padding: "valid" (the paper) or "same" (Neural Network Console's default).
        branch_units: Dense units after each slice's convolutions (paper: 100).
        side_units: Dense units after concatenating one contrast's five branches (paper: 100, 100).
        joint_units: Dense units after joining T1w and T2w (paper: 200, 50, 25).
        initializer: "glorot_uniform" (Keras default) or "nnc_gaussian_glorot".
        contrasts: the contrasts the network reads, in ``levels.CONTRASTS`` order (paper: both;
            ("T1w",) or ("T2w",) for a single-contrast network of five branches).
    """

    image_size: int = 128
    conv_filters: tuple[int, int] = (16, 8)
    kernel_size: int = 5
    padding: str = "valid"
    branch_units: int = 100
    side_units: tuple[int, ...] = (100, 100)
    joint_units: tuple[int, ...] = (200, 50, 25)
    initializer: str = "glorot_uniform"
    contrasts: tuple[str, ...] = CONTRASTS

    def __post_init__(self):
        object.__setattr__(self, "contrasts", check_contrasts(self.contrasts))
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.initializer not in INITIALIZERS:
            raise ValueError(f"initializer must be one of {tuple(INITIALIZERS)}, got {self.initializer!r}")
        sizes = {"image_size": (self.image_size,), "conv_filters": self.conv_filters,
                 "kernel_size": (self.kernel_size,), "branch_units": (self.branch_units,),
                 "side_units": self.side_units, "joint_units": self.joint_units}
        for key, values in sizes.items():
            if any(v < 1 for v in values):
                raise ValueError(f"{key} must be at least 1, got {values if len(values) > 1 else values[0]}")
        if self.image_size < 4 * self.kernel_size:
            raise ValueError(f"image_size {self.image_size} is too small for two {self.kernel_size}x"
                             f"{self.kernel_size} convolutions and two poolings")

    def as_dict(self) -> dict:
        return asdict(self)


def _slice_branch(x, name: str, config: ModelConfig, init):
    """Conv-pool-conv-pool-dense of one slice; children named ``f"{name}_{op}"``."""
    import keras

    layers = keras.layers
    f1, f2 = config.conv_filters
    k = config.kernel_size
    x = layers.Conv2D(f1, k, padding=config.padding, activation="relu", kernel_initializer=init,
                      name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool1")(x)
    x = layers.Conv2D(f2, k, padding=config.padding, activation="relu", kernel_initializer=init,
                      name=f"{name}_conv2")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool2")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(config.branch_units, activation="relu", kernel_initializer=init, name=f"{name}_dense")(x)


def build_myelin_cnn(config: ModelConfig = ModelConfig(), name: str = "myelin_cnn"):
    """Build the paper's network.

    Args:
        config: architecture options (defaults: the paper's).
        name: the model's name.

    Returns:
        A functional ``keras.Model`` taking a dict of (batch, size, size, 1) float32 images keyed
        by ``levels.contrast_input_names(config.contrasts)`` (the ten ``levels.INPUT_NAMES`` for
        the paper's network, five for a single contrast) and returning (batch, 1) estimated age
        in months.
    """
    import keras

    layers = keras.layers
    init = INITIALIZERS[config.initializer]
    shape = (config.image_size, config.image_size, 1)
    inputs = {}
    sides = []
    for contrast in config.contrasts:
        block = contrast.lower()
        branches = []
        for level in LEVEL_KEYS:
            key = input_name(contrast, level)
            inputs[key] = keras.Input(shape=shape, name=key)
            branches.append(_slice_branch(inputs[key], key, config, init))
        x = layers.Concatenate(name=f"{block}_concat")(branches)
        for i, units in enumerate(config.side_units, start=1):
            x = layers.Dense(units, activation="relu", kernel_initializer=init, name=f"{block}_dense{i}")(x)
        sides.append(x)
    x = layers.Concatenate(name="joint_concat")(sides) if len(sides) > 1 else sides[0]
    for i, units in enumerate(config.joint_units, start=1):
        x = layers.Dense(units, activation="relu", kernel_initializer=init, name=f"joint_dense{i}")(x)
    age = layers.Dense(1, activation="linear", kernel_initializer=init, name="age")(x)
    return keras.Model(inputs=inputs, outputs=age, name=name)
