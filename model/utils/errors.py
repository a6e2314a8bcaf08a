"""A mistake the user can fix is one clear message and exit status 2, never a traceback."""

import errno
import logging
import os
import re
import signal
import sys


class UserError(Exception):
    """A mistake in the user's input, or a problem they can fix: shown as one message."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: usually a learning rate that is too high."""


# Writing where the user may not, or cannot
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
# A path given that is the wrong kind of thing, and what to say of it
WRONG_PATH = {
    errno.ENOTDIR: "a part of this path is a file, where a folder is needed",
    errno.EEXIST: "this is a file, where a folder is needed",
    errno.EISDIR: "this is a folder, where a file is needed",
    errno.ENAMETOOLONG: "this name is too long for the file system",
}


def run_main(main, argv=None):
    """Calls `main(argv)` (None: the command line's); a UserError, a full disk, a forbidden file or
    a path of the wrong kind becomes one message and exit status 2. SIGTERM (from `kill`, job
    schedulers and pre-emption) stops a script as Ctrl-C does."""
    SIGNALS.clear()
    signal.signal(signal.SIGTERM, interrupt)  # as Ctrl-C does
    signal.signal(signal.SIGINT, interrupt)  # quiet_tensorflow's ends here
    hook, sys.unraisablehook = sys.unraisablehook, _quiet_interrupts
    try:
        for arg in sys.argv[1:] if argv is None else argv:
            check_utf8(arg, "On the command line, ")
        try:
            main(argv)
        except Exception:
            if SIGNALS:  # TensorFlow's own error on its way out of an interrupted call: the interrupt is what happened
                raise KeyboardInterrupt from None
            raise
        if SIGNALS:  # an interrupt swallowed by a finalizer (__del__) while TensorFlow ran
            raise KeyboardInterrupt
    except UserError as error:
        _exit_with(str(error))
    except UnicodeEncodeError as error:  # a name in another encoding, met in a folder given
        _exit_with(not_utf8(error.object, ""))
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            _exit_with(disk_full(error.filename))
        if error.errno in WRONG_PATH:
            _exit_with(f"{error.filename or 'a path'}: {WRONG_PATH[error.errno]}. Give another path, then run again.")
        if error.errno not in NOT_WRITABLE:
            raise
        _exit_with(
            f"{error.filename or 'a file'}: {os.strerror(error.errno)}. Check the permissions, or use another "
            "folder, then run the same command again."
        )
    except Exception as error:  # TensorFlow raises its own errors on a full disk, and out of memory
        if type(error).__name__ == "ResourceExhaustedError":
            _exit_with(
                "Out of memory: the network or a batch is too large for this machine. Lower batch_size, or the "
                "network's sizes (such as num_channels or lstm_size), in params.json; then run again."
            )
        if "No space left on device" not in str(error):
            raise
        # "{{function_node ...}} path/events.out...; No space left on device": keep the path
        _exit_with(disk_full(re.sub(r"\{\{.*?\}\}", "", str(error).split(";")[0]).strip()))
    except KeyboardInterrupt:
        logging.getLogger("tensorflow").disabled = True  # its complaints about objects left half restored
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    finally:
        sys.unraisablehook = hook


# The Ctrl-C and SIGTERM received while a script's main runs. An interrupt raised inside TensorFlow's Python
# code can come out as another error (RuntimeError, SystemError), or be swallowed by a finalizer; either
# way the script then ends as interrupted.
SIGNALS = []


def interrupt(signum, frame):
    SIGNALS.append(signum)
    raise KeyboardInterrupt


def _quiet_interrupts(unraisable):
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def check_utf8(text, where):
    """Stops with a clear message if `text` (a path, a name) is not valid UTF-8, which TensorFlow needs."""
    if text.encode("utf-8", "backslashreplace").decode() != text:  # a byte that was not UTF-8 comes out as "\udcff"
        raise UserError(not_utf8(text, where))


def not_utf8(text, where):
    return (
        f"{where}{text.encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8 text (such as a file name "
        "written in another encoding). Rename it with UTF-8 characters only, then run again."
    )


def disk_full(what):
    return (
        f"The disk is full: {what or 'a file'} could not be written. Free some space, then run the same command "
        "again (a training run continues with --restore_from MODEL_DIR/last_weights: the epochs it saved are safe)."
    )


def _exit_with(message):
    if any(getattr(handler, "run_log", False) for handler in logging.getLogger().handlers):  # the run's log too
        logging.error("Error: %s", message)
    else:
        print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)
