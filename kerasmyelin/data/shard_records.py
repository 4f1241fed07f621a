"""One infant as a TFRecord record of a sharded ten-slice set (``data.shards``): encoding and decoding.

A record (``tf.train.Example``) holds ``participant_id`` (bytes), ``age_months`` (float, corrected
age in months), ``image_shape`` (int64 [H, W]) and one bytes feature per input name
(``levels.INPUT_NAMES``): that (H, W) image as little-endian float16 in C order.

A TFRecord frame is a uint64 length, a masked crc32c of the length, the data and a masked crc32c
of the data (16 bytes around each record), so the offsets follow from the serialised sizes at
write time. TensorFlow writes and checks the frames: no fast crc32c is importable here without it
(neither ``crc32c`` nor ``google_crc32c``; ``isal`` has only crc32).
"""

from __future__ import annotations

import numpy as np

from kerasmyelin.levels import INPUT_NAMES
from kerasmyelin.runtime import import_tensorflow_quietly

FRAME_BYTES = 16  # TFRecord framing around each record: length, its crc, the data's crc


def encode_record(participant_id: str, age_months: float, images: dict[str, np.ndarray]) -> bytes:
    """One infant as a serialised ``tf.train.Example`` (see the module docstring).

    Args:
        images: input name -> (H, W) image, stored as float16.
    """
    tf = import_tensorflow_quietly()

    def bytes_feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    shape = np.shape(images[INPUT_NAMES[0]])
    features = {"participant_id": bytes_feature(str(participant_id).encode()),
                "age_months": tf.train.Feature(float_list=tf.train.FloatList(value=[float(age_months)])),
                "image_shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(shape)))}
    for name in INPUT_NAMES:
        image = np.ascontiguousarray(images[name], dtype="<f2")
        if image.shape != shape:
            raise ValueError(f"{participant_id}: {name} is {image.shape}, {INPUT_NAMES[0]} is {shape}")
        features[name] = bytes_feature(image.tobytes())
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def half_to_float32(bits):
    """IEEE float16 bit patterns -> float32 values, exactly, with integer ops only.

    TensorFlow's own float16 ops would do, but with oneDNN on (``runtime``) the first of them
    logs an error-level notice on CPUs without AVX-512. Denormal halves are built as integer
    times 2^-24: TensorFlow flushes float32 denormals, which rules out the usual trick (shift,
    then multiply by 2^112).

    Args:
        bits: uint16 tensor of float16 bit patterns.

    Returns:
        float32 tensor of the same shape (every one of the 65536 patterns as numpy converts it).
    """
    tf = import_tensorflow_quietly()

    bits = tf.cast(bits, tf.int32)
    sign = tf.bitwise.left_shift(tf.bitwise.bitwise_and(bits, 0x8000), 16)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFF)
    shifted = tf.bitwise.left_shift(magnitude, 13)
    normal = tf.bitcast(shifted + ((127 - 15) << 23), tf.float32)  # exponent bias 15 -> 127
    special = tf.bitcast(tf.bitwise.bitwise_or(shifted, 0x7F800000), tf.float32)  # inf, nan
    denormal = tf.cast(magnitude, tf.float32) * 2.0 ** -24
    value = tf.where(magnitude >= 0x7C00, special, tf.where(magnitude >= 0x0400, normal, denormal))
    return tf.bitcast(tf.bitwise.bitwise_or(tf.bitcast(value, tf.int32), sign), tf.float32)


def parse_records(serialized, image_shape: tuple[int, int]):
    """Decode a batch of records with TensorFlow ops (in a ``tf.data`` map or eagerly).

    Args:
        serialized: (B,) tf.string, serialised records.
        image_shape: (H, W) of the set's images.

    Returns:
        (input name -> (B, H, W) float32, (B,) float32 age in months, (B,) participant ids).
    """
    tf = import_tensorflow_quietly()

    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in INPUT_NAMES}
    spec.update(participant_id=tf.io.FixedLenFeature([], tf.string),
                age_months=tf.io.FixedLenFeature([], tf.float32),
                image_shape=tf.io.FixedLenFeature([2], tf.int64))
    parsed = tf.io.parse_example(serialized, spec)
    images = {name: half_to_float32(tf.reshape(tf.io.decode_raw(parsed[name], tf.uint16, little_endian=True),
                                               (-1, *image_shape)))
              for name in INPUT_NAMES}
    return images, parsed["age_months"], parsed["participant_id"]
