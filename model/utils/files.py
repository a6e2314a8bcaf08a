"""The JSON files of runs: read with a clear message when broken, written whole or not at all,
and never through a symbolic link, so that nothing lands outside the folders given."""

import json
import os
import secrets
from pathlib import Path

from model.utils.errors import UserError


def load_json(path):
    """The JSON object in a file; a missing, unreadable or malformed file is a UserError naming it."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"No JSON file found at {path}. Check the path.") from None
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


def save_json(values, path):
    """Saves a dict as a JSON file, atomically; NumPy and TensorFlow numbers become plain ones."""
    write_text_atomic(json.dumps(values, indent=4, default=_to_builtin) + "\n", path)


def write_text_atomic(text, path):
    """Writes a text (or, given bytes, binary) file so that it holds either the old or the new
    content, never half of it.

    The text goes to a temporary file next to the target, then a rename puts it in place (atomic
    on one file system). A kill -9 in between leaves `.NAME.*.tmp`, which the next run deletes.
    """
    path = Path(path)
    refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # Created with 0o666 less the umask, as any new file is (mkstemp's 0o600 would hide results from a team).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # name the file asked for, not the temporary one
            error.filename = str(path)
        raise


def refuse_link(path):
    """Stops with a clear message if `path` is a symbolic link: outputs never follow one."""
    if Path(path).is_symlink():
        raise UserError(
            f"{path} is a symbolic link. Outputs are never written through links, so that nothing is "
            "written outside the folders given: remove the link (its target stays), then run again."
        )


def open_for_append(path):
    """A text file opened for appending, created if needed, never through a symbolic link."""
    refuse_link(path)
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666), "a")


def append_json_line(values, path):
    """Appends a dict to a JSON-lines file as one line in one write, so that a reader polling it
    sees whole lines; a line cut short by a crash has no newline and is ignored."""
    with open_for_append(path) as f:
        f.write(json.dumps(values, default=_to_builtin) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path):
    """The dicts in a JSON-lines file; a line still being written, or cut short by a crash, is left out."""
    try:
        lines = Path(path).read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            if line.endswith("\n") and line.strip():
                records.append(json.loads(line))
        except json.JSONDecodeError:  # a line a full disk cut short, then continued by a later run
            continue
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
