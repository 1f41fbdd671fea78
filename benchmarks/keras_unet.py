"""The assignment's own Keras code (its U-Net, its recipe and its tf.data pipeline), the baseline the
benchmarks compare pixelwise with. Imports TensorFlow only, so a whole command timed with it pays for
no torch import it would not have."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def unet_model(input_size: tuple[int, int, int] = (96, 128, 3), n_filters: int = 32, n_classes: int = 23):
    """The assignment's U-Net as it writes it (fp32 defaults), compiled with its recipe: Adam,
    sparse categorical cross-entropy on logits, pixel accuracy."""
    import tensorflow as tf
    from tensorflow.keras.layers import Conv2D, Conv2DTranspose, Dropout, Input, MaxPooling2D, concatenate

    def conv_block(inputs, filters, dropout_prob=0.0, max_pooling=True):
        conv = Conv2D(filters, 3, activation="relu", padding="same", kernel_initializer="he_normal")(inputs)
        conv = Conv2D(filters, 3, activation="relu", padding="same", kernel_initializer="he_normal")(conv)
        if dropout_prob > 0:
            conv = Dropout(dropout_prob)(conv)
        return (MaxPooling2D(pool_size=(2, 2))(conv) if max_pooling else conv), conv

    def upsampling_block(expansive_input, contractive_input, filters):
        up = Conv2DTranspose(filters, 3, strides=(2, 2), padding="same")(expansive_input)
        merge = concatenate([up, contractive_input], axis=3)
        conv = Conv2D(filters, 3, activation="relu", padding="same", kernel_initializer="he_normal")(merge)
        return Conv2D(filters, 3, activation="relu", padding="same", kernel_initializer="he_normal")(conv)

    inputs = Input(input_size)
    c1 = conv_block(inputs, n_filters)
    c2 = conv_block(c1[0], 2 * n_filters)
    c3 = conv_block(c2[0], 4 * n_filters)
    c4 = conv_block(c3[0], 8 * n_filters, dropout_prob=0.3)
    c5 = conv_block(c4[0], 16 * n_filters, dropout_prob=0.3, max_pooling=False)
    u6 = upsampling_block(c5[0], c4[1], 8 * n_filters)
    u7 = upsampling_block(u6, c3[1], 4 * n_filters)
    u8 = upsampling_block(u7, c2[1], 2 * n_filters)
    u9 = upsampling_block(u8, c1[1], n_filters)
    conv9 = Conv2D(n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal")(u9)
    model = tf.keras.Model(inputs=inputs, outputs=Conv2D(n_classes, 1, padding="same")(conv9))
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def train_job(data: Path, epochs: int, size: tuple[int, int] = (96, 128)) -> None:
    """The assignment's whole training job on ``data`` (CameraRGB/, CameraMask/): its tf.data pipeline
    (PNG decode, mask = max over R, G, B, nearest resize, cache, shuffle buffer 500, batch 32) and
    ``fit`` for ``epochs`` epochs."""
    import tensorflow as tf

    images = sorted(str(p) for p in (data / "CameraRGB").iterdir())
    masks = sorted(str(p) for p in (data / "CameraMask").iterdir())

    def process_path(image_path, mask_path):
        img = tf.image.convert_image_dtype(tf.image.decode_png(tf.io.read_file(image_path), channels=3), tf.float32)
        mask = tf.image.decode_png(tf.io.read_file(mask_path), channels=3)
        return img, tf.math.reduce_max(mask, axis=-1, keepdims=True)

    def preprocess(image, mask):
        return tf.image.resize(image, size, method="nearest"), tf.image.resize(mask, size, method="nearest")

    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).map(process_path).map(preprocess)
    model = unet_model((*size, 3))
    model.fit(dataset.cache().shuffle(500).batch(32), epochs=epochs, verbose=0)


if __name__ == "__main__":  # python benchmarks/keras_unet.py DATA EPOCHS: one whole job, as a user runs it
    import sys

    train_job(Path(sys.argv[1]), int(sys.argv[2]))
