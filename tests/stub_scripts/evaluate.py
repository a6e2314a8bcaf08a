"""A stand-in for evaluate.py in the fast search tests (see train.py here): it writes the test
metrics of a trial's best weights, their dev metrics, without TensorFlow."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--model_dir", required=True)
model_dir = Path(parser.parse_args().model_dir)
metrics = json.loads((model_dir / "metrics_eval_best_weights.json").read_text())
(model_dir / "metrics_test_best_weights.json").write_text(json.dumps(metrics))
print(f"Saved {model_dir / 'metrics_test_best_weights.json'}")
