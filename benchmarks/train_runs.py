"""The benchmark's figures that time train.py itself, as a user runs it: its epoch time and
peak memory as the dataset grows, and its start-up time. Used by benchmark.py."""

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo.synthetic_signs import generate_signs
from model.utils.dataset import list_split

REPO = Path(__file__).resolve().parents[1]
SCALES = (1, 2, 4)


def experiment(folder, train_files, dev_files, **changes):
    """A data folder (links to the given files) and an experiment folder for train.py; returns
    the command line that trains it."""
    data_dir, model_dir = folder / "data", folder / "experiment"
    for split, files in (("train", train_files), ("dev", dev_files)):
        (data_dir / split).mkdir(parents=True)
        for path in files:
            (data_dir / split / Path(path).name).symlink_to(path)
    model_dir.mkdir()
    params = json.loads((REPO / "experiments" / "base_model" / "params.json").read_text())
    (model_dir / "params.json").write_text(json.dumps({**params, **changes}))
    return [sys.executable, str(REPO / "train.py"), "--model_dir", str(model_dir), "--data_dir", str(data_dir)]


def scaling(folder, num_images, dev_files):
    """Epoch time (once the cache is full) and peak memory of train.py at each scale of a
    dataset of num_images, for each cache setting."""
    generate_signs(folder / "images", num_images * SCALES[-1], image_size=64, test_fraction=0.0)
    all_files, _ = list_split(folder / "images", "train")
    figures = {}
    for cache in ("memory", "none", "disk"):
        for scale in SCALES:
            run_folder = folder / f"{cache}_{scale}x"
            where = str(run_folder / "cache") if cache == "disk" else cache
            train_files = [f for i, f in enumerate(all_files) if i % SCALES[-1] < scale]  # every label
            command = experiment(run_folder, train_files, dev_files, num_epochs=4, cache=where)
            peak_mb = run_measuring_memory(command)
            log = (run_folder / "experiment" / "train.log").read_text()
            # The epochs after the first, which fills the cache
            seconds = [float(s) for s in re.findall(r"Epoch [234]/4 - Train metrics: .*\((\S+) s\)", log)]
            figures[f"epoch_seconds_{cache}_{scale}x"] = statistics.median(seconds)
            figures[f"peak_memory_mb_{cache}_{scale}x"] = peak_mb
        first, last = f"{cache}_{SCALES[0]}x", f"{cache}_{SCALES[-1]}x"
        figures[f"epoch_time_4x_vs_1x_{cache}"] = figures[f"epoch_seconds_{last}"] / figures[f"epoch_seconds_{first}"]
        growth = figures[f"peak_memory_mb_{last}"] - figures[f"peak_memory_mb_{first}"]
        figures[f"peak_memory_growth_4x_mb_{cache}"] = growth
    return figures


def run_measuring_memory(command):
    """Runs a command to its end; returns its peak resident memory in MB (Linux only): the kernel's
    high-water mark, VmHWM, read while it runs (a child's ru_maxrss would start at this large parent's)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_kb = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kb = max(peak_kb, int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]))
        except (OSError, TypeError):  # the process just ended
            pass
        time.sleep(0.05)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: see the train.log of its --model_dir")
    return peak_kb / 1024


def startup_seconds(folder, files):
    """Seconds from launching `python train.py` to the end of its first training step."""
    command = experiment(folder, files[:64], files[:64], num_epochs=1)
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    output = ""
    # tqdm redraws the bar once the first step is done: "Epoch 1/1:  50%|... | 1/2".
    while not re.search(r"\|\s*[1-9]\d*/\d+", output) and process.poll() is None:
        output += process.stderr.read(1)
    seconds = time.perf_counter() - start
    process.kill()
    process.wait()
    return seconds
