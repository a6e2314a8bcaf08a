"""Ctrl-C before a script's main runs ends it quietly, with "Interrupted." and status 130, instead of a
traceback from whatever it was importing. Every script imports this module first; run_main takes over."""

# _signal, the C module under `signal`: it loads at once, where `signal` first imports enum, in which a
# Ctrl-C would still give a traceback
import _signal
import os

CONSOLE = os.dup(2)  # the console, even while quiet_tensorflow points stderr elsewhere


def interrupted(signum, frame):
    # Importing can swallow a KeyboardInterrupt in one of TensorFlow's threads and go on: end here, at once
    os.write(CONSOLE, b"Interrupted.\n")
    os._exit(130)


_signal.signal(_signal.SIGINT, interrupted)
