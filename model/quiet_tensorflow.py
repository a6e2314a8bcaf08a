"""Import TensorFlow without its C++ start-up chatter; scripts import this module first.

TensorFlow prints oneDNN and CUDA notices to the stderr file descriptor before its own
logging is set up, where TF_CPP_MIN_LOG_LEVEL cannot reach them. So we point that
descriptor at /dev/null while TensorFlow loads and looks for devices, and the console
tells the training story. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import logging
import os


def _import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery prints the CUDA notices
        # TensorFlow's Python loggers report routine events (such as checkpoint sharding)
        # at INFO level, which would mix into the run's own log.
        tf.get_logger().setLevel(logging.WARNING)
        logging.getLogger("absl").setLevel(logging.WARNING)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(devnull)
        os.close(saved_stderr)


_import_tensorflow_quietly()
