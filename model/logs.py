"""Logging: every console line also goes into the run's log file."""

import errno
import logging
import sys

from tqdm import tqdm

from model.errors import NOT_WRITABLE
from model.files import refuse_link


class TqdmHandler(logging.StreamHandler):
    """Logs to the console through tqdm.write, so log lines don't break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def set_logger(log_path, required=True):
    """Sends INFO logs to the console and to `log_path`, such as MODEL_DIR/train.log.

    Calling it twice replaces the handlers instead of adding duplicates. A log that cannot be
    written (a read-only folder) is an error if `required`, else a warning: the console only.
    """
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    refuse_link(log_path)
    try:
        log_file = logging.FileHandler(log_path, encoding="utf-8")
    except OSError as error:
        if required or error.errno not in (*NOT_WRITABLE, errno.ENOENT):
            raise
        if error.errno != errno.ENOENT:  # a missing folder is for the script to report
            logging.warning(f"Warning: cannot write {log_path} ({error.strerror}): logging to the console only")
        return
    log_file.setFormatter(logging.Formatter("%(asctime)s:%(levelname)s: %(message)s"))
    logger.addHandler(log_file)
