"""The CPU a study's training processes spent, estimated from the steps each one ran.

A study's CPU is measured by cpu_watch_tree.sh (docs/studies/README.md) from the start it watched; a start before
it, or a process a session's end killed before a watcher reaped it, left no figure. This estimates those: every
unit's TensorBoard validation events carry the global step and the writing process's id, so each process's steps
(from the epoch it resumed at to its last finished epoch) times a training step's CPU (two cores times the wall
time `python -m benchmarks train` measured alone) give its CPU, validation left out. Printed per process, so the
estimate can be checked against the starts a watcher did measure.

Usage: python docs/studies/cpu_estimate.py STUDY_FOLDER --step-cpu unet=0.51,u_transformer=0.844
"""

import argparse
import collections
import datetime
import json
import pathlib

import tensorflow as tf
from tensorflow.core.util import event_pb2


def _steps(events_file):
    """(global step, wall time) of each validation loss this events file recorded (one an epoch), sorted."""
    steps = []
    for record in tf.data.TFRecordDataset(str(events_file)):
        event = event_pb2.Event.FromString(record.numpy())
        if any(value.tag == "evaluation_loss_vs_iterations" for value in event.summary.value):
            steps.append((event.step, event.wall_time))
    return sorted(steps)


def _clock(wall_time):
    return datetime.datetime.fromtimestamp(wall_time, datetime.timezone.utc).strftime("%m-%dT%H:%M")


def processes(study):
    """One row per (unit, process): the unit, its model, the process id, the steps it ran, its first and last time."""
    rows = []
    for events_file in sorted(pathlib.Path(study).glob("**/logs/validation/events.out.tfevents.*")):
        unit = events_file.parents[2]
        recorded = _steps(events_file)
        if not recorded:
            continue
        model = json.loads((unit / "config.json").read_text())["model"]
        steps = [step for step, _ in recorded]
        per_epoch = min((b - a for a, b in zip(steps, steps[1:]) if b > a), default=steps[0])
        # The first event is at the end of the process's first epoch; it began one epoch's steps before.
        ran = steps[-1] - (steps[0] - per_epoch)
        rows.append(
            {
                "unit": str(unit.relative_to(study)),
                "model": model,
                "pid": events_file.name.split(".")[-3],
                "steps": ran,
                "first": recorded[0][1],
                "last": recorded[-1][1],
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=pathlib.Path, help="the study folder (run.sh's STUDY_FOLDER)")
    parser.add_argument(
        "--step-cpu", required=True, help="CPU seconds a training step, per model: MODEL=SECONDS,MODEL=SECONDS"
    )
    args = parser.parse_args()
    step_cpu = {name: float(seconds) for name, seconds in (pair.split("=") for pair in args.step_cpu.split(","))}
    per_pid = collections.defaultdict(float)
    total = 0.0
    print("unit | model | process | steps | from | to | CPU s (estimated)")
    for row in processes(args.study):
        if row["model"] not in step_cpu:
            parser.error(f"--step-cpu has no figure for the model {row['model']!r} ({row['unit']})")
        cpu = row["steps"] * step_cpu[row["model"]]
        per_pid[row["pid"]] += cpu
        total += cpu
        print(
            f"{row['unit']} | {row['model']} | {row['pid']} | {row['steps']} | {_clock(row['first'])} | "
            f"{_clock(row['last'])} | {cpu:.0f}"
        )
    print("per process: " + ", ".join(f"{pid} {cpu:.0f}" for pid, cpu in per_pid.items()))
    print(f"total {total:.0f} CPU s ({total / 3600:.1f} h)")


if __name__ == "__main__":
    main()
