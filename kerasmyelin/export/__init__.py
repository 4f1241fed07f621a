"""Trained models in formats other tools load: TensorFlow SavedModel, ONNX and a portable ``.keras``.

:mod:`.portable` rebuilds a model's graph from Keras' own classes; :mod:`.formats` writes,
reloads and checks each format. ``kerasmyelin export`` (``cli/export_cmd.py``) finds the model
as ``kerasmyelin predict`` does.
"""
