"""User errors: one clear message on stderr (and in the run's log) and exit status 2, never a traceback."""

import errno
import logging
import os
import signal
import sys


class UserError(Exception):
    """A mistake in the user's input, or a problem they can fix: shown as one message."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: usually a learning rate that is too high."""


# Operating-system errors that the user fixes, not the code: shown like a UserError.
USER_FIXABLE = {
    errno.ENOSPC: "Free some space",
    errno.EDQUOT: "Free some space",
    errno.EACCES: "Check the permissions, or use another folder",
    errno.EPERM: "Check the permissions, or use another folder",
    errno.EROFS: "Use a folder on a writable disk",
}


# What a write to a folder that the user may not, or cannot, write to raises.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def run_main(main):
    """Calls `main()`; a UserError (or a full disk, a forbidden file) becomes one message and exit status 2.

    SIGTERM (sent by `kill`, job schedulers and pre-emption) stops a script as Ctrl-C does.
    """
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        main()
    except UserError as error:
        _exit_with(str(error))
    except OSError as error:
        if error.errno not in USER_FIXABLE:
            raise
        fix = USER_FIXABLE[error.errno]
        _exit_with(f"{error.filename or 'a file'}: {os.strerror(error.errno)}. {fix}, then run the same command again.")
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)


def _exit_with(message):
    if logging.getLogger().handlers:  # set_logger ran: the message also goes into the run's log
        logging.error("Error: %s", message)
    else:
        print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
