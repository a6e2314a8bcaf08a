"""The files the template reads and writes, through three primitives that every script uses:
open_regular (a regular file only, never through a link: a pipe or device would hang the script),
write_text_atomic (an output whole or not at all) and lock_folder (one writer per folder)."""

import csv
import errno
import io
import json
import os
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from model.utils.errors import NOT_WRITABLE, UserError

try:
    import fcntl
except ImportError:  # Windows: folders are not locked
    fcntl = None


def load_json(path):
    """The JSON object in a file; a missing, unreadable or malformed file is a UserError naming it."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            content = json.loads(f.read().decode("utf-8-sig"))  # "-sig": a byte-order mark is allowed
    except FileNotFoundError:
        raise UserError(f"No JSON file found at {path}. Check the path.") from None
    except RecursionError:
        raise UserError(f"{path} nests its values too deeply to be a params or results file.") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}). Save it as UTF-8 JSON.") from None
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror}. Check that it is a readable file.") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Fix the file (a common cause is a trailing comma or a missing quote)."
        ) from None
    if not isinstance(content, dict):
        raise UserError(f"{path} must hold a JSON object ({{...}}), not {type(content).__name__}.")
    return content


def read_lines(path):
    """The lines of a UTF-8 text file; a byte that is not UTF-8 is an error naming the file and line."""
    with open_regular(path) as f:
        return decode_lines(f.read(), path)


def decode_lines(data, name):
    """The lines of UTF-8 bytes read from `name` (a file, standard input), decoded, or a UserError naming the line."""
    lines = data.splitlines()
    for number, line in enumerate(lines, 1):
        try:
            lines[number - 1] = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{name}:{number} is not UTF-8 text. Save it as UTF-8.") from None
    return lines


def save_json(values, path):
    """Saves a dict as a JSON file, atomically; NumPy and TensorFlow numbers become plain ones."""
    write_text_atomic(json.dumps(values, indent=4, default=_to_builtin) + "\n", path)


def save_csv(rows, path):
    """Saves rows of cells as a CSV file, atomically."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_text_atomic(text.getvalue(), path)


def write_text_atomic(text, path):
    """Writes a text (or bytes) file whole or not at all: into a temporary file beside it, renamed into
    place (atomic on one file system). A kill -9 in between leaves `.NAME.*.tmp`, for the next run to delete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_special(path)  # a folder that is not writable shows at the temporary file, named as `path`
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Created with 0o666 less the umask, as any new file is (mkstemp's 0o600 would hide results from a team).
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:
            # surrogateescape: a file name that is not UTF-8 is written back as the bytes it was
            f.write(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        refuse_special(path)  # again, just before the rename: never over a device or a pipe
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # name the file asked for, not the temporary one
            error.filename = str(path)
        raise


def require_folder(path, hint):
    """Stops with a clear message unless `path` is a folder, saying whether it is missing or a file."""
    if not Path(path).is_dir():
        raise UserError(f"{path} {'is not a folder' if Path(path).exists() else 'does not exist'}. {hint}")


def check_output(path, folder=False):
    """Stops with a clear message unless `path` can take an output: absent, or a regular file (a folder if
    `folder`), not a link, in a writable folder. Scripts call it on each output before their work starts."""
    refuse_special(path, folder)
    if Path(path).parent.is_dir():
        try:
            tempfile.TemporaryFile(dir=Path(path).parent).close()
        except OSError as error:  # named as given, for run_main's message
            error.filename = str(path)
            raise


def refuse_special(path, folder=False):
    """Stops with a clear message if `path` is a link, or anything but a regular file (a folder if `folder`)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    # The fix is always another path: what is there may be the system's (/dev/stdout is a link, /dev/null a device)
    if stat.S_ISLNK(mode):
        raise UserError(
            f"{path} is a symbolic link. Outputs are never written through links, so that nothing is "
            "written outside the folders given: give another path."
        )
    if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        raise UserError(
            f"{path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}: give another path."
        )
    raise UserError(
        f"{path} is a device, pipe or socket, not a file: the template reads and writes files only. Give another path."
    )


def open_regular(path, append=False):
    """A file opened to read (binary) or to append (text, created if needed), only if it is a
    regular file: never through a link, and never a pipe or device, which could block forever."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND) if append else os.O_RDONLY
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)  # NONBLOCK: a pipe can't hang us
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # a link; a pipe that nobody reads
            refuse_special(path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        refuse_special(path)
    os.set_blocking(fd, True)
    return open(fd, "a", encoding="utf-8", errors="backslashreplace") if append else open(fd, "rb")


@contextmanager
def lock_folder(folder, holder):
    """Holds an exclusive lock on a folder while one process writes into it; it goes with the
    process however that ends. `holder` says who holds it, for the message another one gets."""
    if fcntl is None:
        yield
        return
    try:
        tempfile.TemporaryFile(dir=folder).close()  # the folder is writable, not only a lock file left in it
        handle = open_regular(Path(folder) / ".lock", append=True)
    except OSError as error:
        if error.errno not in NOT_WRITABLE:
            raise
        raise UserError(f"{folder} is not writable: {holder} writes there. Give another folder.") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"Another {holder} is writing into {folder} right now; two would overwrite each other's files. "
                "Wait for it to end or stop it, or give another folder."
            ) from None
        yield


@contextmanager
def wait_for_lock(path):
    """Holds an exclusive lock on the file at path (made if missing), waiting while another process holds
    it: for work that must not run twice at once, but may run one after the other."""
    with open_regular(path, append=True) as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def build_folder(output_dir, holder):
    """The --output_dir of a build (build_dataset.py, build_vocab.py): made if needed and locked against a
    second build; a build that fails leaves none of the folders it made."""
    output_dir = Path(output_dir)
    made = [folder for folder in output_dir.parents if not folder.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):  # made by this build only if mkdir succeeds: another may race us
        output_dir.mkdir()
        made.insert(0, output_dir)
    require_folder(output_dir, "Give --output_dir a folder, or a path that does not exist yet.")
    with lock_folder(output_dir, holder):
        try:
            yield output_dir
        except BaseException:
            if made and made[0] == output_dir:  # as the lock's holder: no other build is using it
                shutil.rmtree(output_dir, ignore_errors=True)
                for folder in made[1:]:
                    with suppress(OSError):
                        folder.rmdir()  # only if empty
            raise


def append_json_line(values, path):
    """Appends a dict to a JSON-lines file as one line in one write, so that a reader polling it
    sees whole lines; a line cut short by a crash has no newline and is ignored."""
    with open_regular(path, append=True) as f:
        f.write(json.dumps(values, default=_to_builtin) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path):
    """The dicts in a JSON-lines file; a line still being written, or cut short by a crash, is left out."""
    try:
        with open_regular(path) as f:
            lines = f.read().decode("utf-8", "replace").splitlines(keepends=True)
    except FileNotFoundError:
        return []
    records = []
    for line in (line for line in lines if line.endswith("\n") and line.strip()):
        with suppress(json.JSONDecodeError):  # a line a full disk cut short, then continued by a later run
            records.append(json.loads(line))
    return records


def write_json_lines(records, path):
    """Replaces a JSON-lines file with these records, atomically."""
    write_text_atomic("".join(json.dumps(record, default=_to_builtin) + "\n" for record in records), path)


def _to_builtin(value):
    """json.dumps' fallback for NumPy and TensorFlow values: numbers and lists of them."""
    value = value.numpy() if hasattr(value, "numpy") else value  # a TensorFlow tensor
    if hasattr(value, "tolist"):  # a NumPy array or number
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
