"""Import TensorFlow without its C++ start-up chatter; scripts import this module first.

TensorFlow prints oneDNN and CUDA notices to the stderr file descriptor before its own logging is set up,
where TF_CPP_MIN_LOG_LEVEL cannot reach them: stderr points at /dev/null while TensorFlow loads and looks
for devices. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything."""

import logging
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
console = os.dup(2)


def interrupted(signum, frame):
    """Ctrl-C before the script's main runs (run_main takes over then): TensorFlow's loading can swallow a
    KeyboardInterrupt in one of its threads and go on, so the script ends here, as it would later."""
    os.write(console, b"Interrupted.\n")
    os._exit(130)


signal.signal(signal.SIGINT, interrupted)
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
    os.dup2(console, 2)
    os.close(devnull)
