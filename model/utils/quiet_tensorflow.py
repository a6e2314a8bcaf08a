"""Import TensorFlow without its C++ start-up chatter; scripts import this module first.

TensorFlow prints oneDNN and CUDA notices to the stderr file descriptor before its own logging
is set up, where TF_CPP_MIN_LOG_LEVEL cannot reach them: stderr points at /dev/null while
TensorFlow loads and looks for devices. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"
saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
try:
    if quiet:
        os.dup2(devnull, 2)
    import tensorflow as tf

    tf.config.list_physical_devices()  # device discovery prints the CUDA notices
    # TensorFlow's Python loggers report routine events (such as checkpoint sharding) at
    # INFO level, which would mix into the run's own log.
    tf.get_logger().setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads ends the script as it would later: no traceback
    os.dup2(saved_stderr, 2)
    print("Interrupted.", file=sys.stderr)
    sys.exit(130)
finally:
    os.dup2(saved_stderr, 2)
    os.close(devnull)
    os.close(saved_stderr)
