"""What training minimises and reports, and with which optimiser: one definition shared by
``model.fit`` (``training.fit``) and the custom distributed step (``training.distributed``)."""

from __future__ import annotations

LOSS = "mean_squared_error"  # per sample; the loss is its mean over the batch
METRIC = "mae"


def make_optimizer(train):
    """Adam as the paper sets it (learning rate, beta1, beta2, epsilon from ``TrainConfig``), with
    TensorFlow's one-pass update kernel (``training.optimizer.FusedAdam``)."""
    from kerasmyelin.training.optimizer import FusedAdam

    return FusedAdam(learning_rate=train.learning_rate, beta_1=train.beta_1,
                     beta_2=train.beta_2, epsilon=train.epsilon)


def compile_for_training(model, train) -> None:
    """Squared error (Neural Network Console's SquaredError is the mean over the batch) plus MAE."""
    model.compile(optimizer=make_optimizer(train), loss=LOSS, metrics=[METRIC])
