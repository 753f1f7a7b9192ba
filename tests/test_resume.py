"""Training resumes inside a stage: SIGKILL after a checkpoint, rerun, same logits as an unbroken run.

`blindspot train-classifier` on tiny-llama (400 MNLI pairs, batch 8: 50 optimizer steps, a
checkpoint every 5) is killed with SIGKILL once a checkpoint is on disk; the same command again
says in its log from which step it resumed, and the saved classifier's logits equal, bit for bit
(CPU, one thread in both runs), those of the same training run without interruption. The finished
directory keeps no checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _command(tmp: Path, out: Path, log: Path, data: Path) -> list[str]:
    config = tmp / "classifier.yaml"
    config.write_text("model: tiny-llama\ntemplate: short\nmax_length: 96\nseed: 3\n"
                      "lora: {r: 8, alpha: 16, dropout: 0.1}\n"
                      "optim: {lr: 0.003, batch_size: 8, warmup_ratio: 0.1, checkpoint_every: 5}\n")
    return [sys.executable, "-m", "blindspot.cli", "train-classifier", "--config", str(config),
            "--data", str(data / "mnli-subset" / "multinli_1.0_train.jsonl.gz"), "--n", "400",
            "--cache-dir", str(tmp / "cache"), "--out", str(out), "--log", str(log), "-q"]


def _logits(path: Path, data: Path) -> torch.Tensor:
    from blindspot.data.sources import load_source
    from blindspot.evaluate import predict_proba
    from blindspot.training.classifier import load_classifier

    clf = load_classifier(path, device="cpu", dtype="float32")
    examples = load_source(str(data / "mnli-subset" / "multinli_1.0_dev_matched.jsonl.gz")).examples[:64]
    return torch.as_tensor(predict_proba(clf.model, clf.tokenizer, clf.template, examples, batch_size=16))


def test_sigkilled_training_resumes_from_its_checkpoint_with_the_same_logits(shared_data, tmp_path):
    env = {**os.environ, "BLINDSPOT_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_command(tmp_path, tmp_path / "whole", tmp_path / "whole.log", shared_data), env=env,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    cmd = _command(tmp_path, out, log, shared_data)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list((out / "checkpoints").glob("step-*")):
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    time.sleep(0.3)  # a little past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "DONE").exists()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = re.search(r"resuming from checkpoint \S+: step (\d+) of 50", log.read_text())
    assert resumed and int(resumed.group(1)) % 5 == 0 and 0 < int(resumed.group(1)) < 50
    assert not (out / "checkpoints").exists()
    rows = lambda path: [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}  # noqa: E731
                         for line in (path / "train_log.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "whole") == rows(out)  # the same losses at the same steps
    a, b = _logits(tmp_path / "whole", shared_data), _logits(out, shared_data)
    assert torch.equal(a, b), (a - b).abs().max()
