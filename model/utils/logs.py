"""Logging: every console line also goes into the run's log file."""

import errno
import logging
import sys

from tqdm import tqdm

from model.utils.errors import NOT_WRITABLE
from model.utils.files import check_output, open_regular


class TqdmHandler(logging.StreamHandler):
    """Logs to the console through tqdm.write, so that log lines don't break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class LogFileHandler(logging.FileHandler):
    """A log file that stops, with one warning on the console, when it can no longer be written
    (a full disk), instead of printing a traceback for every line. It is opened as every file
    the template appends to is (files.open_regular): never a link, a pipe or a device."""

    run_log = True  # errors.run_main writes its last message here too

    def _open(self):
        return open_regular(self.baseFilename, append=True)

    def handleError(self, record):
        logging.getLogger().removeHandler(self)
        logging.warning(f"Warning: {self.baseFilename} can no longer be written: logging to the console only")


def set_logger(log_path, required=True):
    """Sends INFO logs to the console and to `log_path`, such as MODEL_DIR/train.log, replacing earlier
    handlers. A log that cannot be written (a read-only folder) is an error if `required`, else a
    warning, and the console alone gets the logs."""
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.addHandler(TqdmHandler())
    try:
        check_output(log_path)
        log_file = LogFileHandler(log_path, encoding="utf-8")
    except OSError as error:
        if required or error.errno not in (*NOT_WRITABLE, errno.ENOENT):
            raise
        if error.errno != errno.ENOENT:  # a missing folder is for the script to report
            logging.warning(f"Warning: cannot write {log_path} ({error.strerror}): logging to the console only")
        return
    log_file.setFormatter(logging.Formatter("%(asctime)s:%(levelname)s: %(message)s"))
    logger.addHandler(log_file)
