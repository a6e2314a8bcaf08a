"""Import TensorFlow without its C++ start-up chatter; scripts import this module first.

TensorFlow prints oneDNN and CUDA notices to the stderr file descriptor before its own logging is set up,
where TF_CPP_MIN_LOG_LEVEL cannot reach them: stderr points at /dev/null while TensorFlow loads and looks
for devices. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything."""

import logging
import os

from model.utils.interrupts import CONSOLE  # first: Ctrl-C while TensorFlow loads ends the script quietly

# 3: also its C++ ERROR lines, such as oneDNN's notice that it falls back to Eigen for boolean masks on
# most CPUs; a real failure reaches Python as an exception
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
devnull = os.open(os.devnull, os.O_WRONLY)
try:
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        os.dup2(devnull, 2)
    import tensorflow as tf

    tf.config.list_physical_devices()  # device discovery prints the CUDA notices
    # TensorFlow's Python loggers report routine events (checkpoint sharding) at INFO: they'd mix into the run's log
    tf.get_logger().setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
finally:
    os.dup2(CONSOLE, 2)
    os.close(devnull)
