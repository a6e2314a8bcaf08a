"""A stand-in for train.py in the fast search tests: it trains nothing and imports no TensorFlow,
but takes train.py's arguments, writes the files train.py writes and prints its lines, so that a
search around it runs in seconds.

Its dev accuracy follows the learning rate, as the tiny model's does: at 1e-5 and below it stays
at chance (1/6), above it climbs with each epoch. A SIGTERM stops it between two epochs, as
train.py stops (exit 130). It refuses an image_size other than 16 (exit 2), as train.py refuses
one that is not the tiny dataset's.

With --tracking_uri, it logs to MLflow as train.py does, with the template's own model/utils/tracking.py.

STUB_HOLD_IN=TEXT: after the first epoch it trains in a folder whose name contains TEXT, it
trains no further until it is stopped, as if its next epoch were long (so that a test can stop
the search while the trial trains). STUB_ERROR=MESSAGE: it stops with that message, in the
middle of the progress lines of another train.py writing into the same output.log.
"""

import argparse
import json
import math
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--model_dir", required=True)
parser.add_argument("--data_dir")
parser.add_argument("--restore_from")
parser.add_argument("--param", action="append", default=[])
parser.add_argument("--tracking_uri")
parser.add_argument("--tracking_parent")
args = parser.parse_args()
model_dir = Path(args.model_dir)
stop = []  # set by SIGTERM: a plain list, as a lock taken in a signal handler can deadlock the thread it interrupts
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))


def log(message):
    print(message, flush=True)
    with open(model_dir / "train.log", "a") as f:
        f.write(message + "\n")


def save_json(values, path):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(values, indent=4))
    temporary.replace(path)


def accuracy(learning_rate, epoch):
    if learning_rate <= 1e-5:
        return 1 / 6
    return min(0.99, 0.3 + 0.1 * epoch + 0.01 * math.log10(learning_rate))


params = json.loads((model_dir / "params.json").read_text())
params.update((key, json.loads(value)) for key, value in (change.split("=", 1) for change in args.param))
if os.environ.get("STUB_ERROR"):
    print("Epoch 7/100000:  50%|#####     | 3/6 [00:00<00:00]", end="\r", flush=True)
    print(f"Epoch 7/100000:  67%|######    | 4/6 [00:00<00:00]Error: {os.environ['STUB_ERROR']}", flush=True)
    print("Epoch 7/100000: 100%|##########| 6/6 [00:00<00:00]\nEpoch 7/100000 - Train metrics: loss: 1.0", flush=True)
    sys.exit(2)
if params["image_size"] != 16:  # as train.py says of the tiny dataset's images
    image = f"{args.data_dir}/train/0_IMG_train0.jpg"
    print(f"Error: {image} is 16x16 pixels, but image_size = {params['image_size']} in params.json.", flush=True)
    sys.exit(2)

history_path = model_dir / "history.jsonl"
done = sorted(int(path.stem.split("-")[1]) for path in model_dir.glob("*_weights/ckpt-*.index"))
saved = done[-1] if args.restore_from and done else 0
history = [json.loads(line) for line in history_path.read_text().splitlines()] if history_path.exists() else []
history = [record for record in history if record["epoch"] <= saved]
history_path.write_text("".join(json.dumps(record) + "\n" for record in history))
if saved:
    log(f"Restored {model_dir / 'last_weights' / f'ckpt-{saved}'}: {saved} epochs done")
else:
    log(f"{args.restore_from or 'This run'} holds no checkpoint yet: starting from freshly initialised weights")
save_json(params, model_dir / "params_used.json")
record = {"status": "running", "data": {"data_dir": args.data_dir}}
tracked = ExitStack()
if args.tracking_uri:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from model.utils import tracking

    tracker = tracking.connect(args.tracking_uri, args.tracking_parent)
    record["mlflow_run_id"] = tracked.enter_context(tracker.training_run(model_dir))
    tracker.log_params(params)
save_json(record, model_dir / "run.json")

best = max((r["accuracy"] for r in history), default=None)
hold = "STUB_HOLD_IN" in os.environ and os.environ["STUB_HOLD_IN"] in model_dir.name
for epoch in range(saved + 1, params["num_epochs"] + 1):
    if stop:
        break
    dev = {"accuracy": accuracy(params["learning_rate"], epoch), "loss": 1.0 / epoch, "epoch": epoch}
    log(f"Epoch {epoch}/{params['num_epochs']} - Eval metrics: accuracy: {dev['accuracy']:.3f}")
    with open(history_path, "a") as f:
        f.write(json.dumps({**dev, "train_loss": 1.0 / epoch}) + "\n")
    names = ["last_weights"] + (["best_weights"] if best is None or dev["accuracy"] > best else [])
    for name in sorted(names):
        (model_dir / name).mkdir(exist_ok=True)
        for old in (model_dir / name).glob("ckpt-*.index") if name == "best_weights" else []:
            old.unlink()
        (model_dir / name / f"ckpt-{epoch}.index").write_text(f"epoch {epoch}")
        save_json(dev, model_dir / f"metrics_eval_{name}.json")
    best, saved = max(best or 0, dev["accuracy"]), epoch
    if args.tracking_uri:
        tracker.log_history()
    if hold:
        hold = False
        deadline = time.monotonic() + 120
        while not stop and time.monotonic() < deadline:
            time.sleep(0.05)  # ended early by the signal
        if not stop:
            sys.exit("Error: the search never stopped this trial")

if stop:
    log(f"Stopped after {saved} epochs. Continue with --restore_from {model_dir / 'last_weights'}")
    save_json({**record, "status": "interrupted"}, model_dir / "run.json")
    print("Interrupted.", file=sys.stderr)
    sys.exit(130)
save_json({**record, "status": "finished"}, model_dir / "run.json")
tracked.close()
log(f"Done. Weights, metrics and summaries are in {model_dir}")
