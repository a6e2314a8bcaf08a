"""A faster batch norm with Keras' weights, which model_fn.py uses by name. A .keras file of the
template loads with keras.models.load_model after `import model.input_fn, model.utils.layers`."""

import tensorflow as tf

keras = tf.keras


@keras.utils.register_keras_serializable(package="template")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused kernel, which normalizes in one pass
    over the activations where Keras' own takes several: base_model trains about 30% faster on a CPU
    (benchmarks/benchmark.py). The weights, and so the checkpoints, are Keras' own."""

    def call(self, inputs, training=False):
        # The kernel takes images, [batch, height, width, channels]: a dense layer's
        # [batch, channels] goes in as [batch, 1, 1, channels].
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        training = bool(training) and self.trainable  # a frozen layer normalizes as in inference
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=self.gamma,
            offset=self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            # In training, the kernel also returns the moving averages updated with this batch.
            exponential_avg_factor=1.0 - self.momentum if training else 1.0,
            is_training=training,
        )
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return tf.reshape(y, tf.shape(inputs))
