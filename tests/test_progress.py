"""One way to report progress: the event, the callback, and the JSON line a child writes."""

from __future__ import annotations

import io
import json

from veil.progress import ProgressEvent, emit, json_line_reporter


def test_emit_calls_the_callback_and_tolerates_none() -> None:
    seen: list[ProgressEvent] = []
    emit(seen.append, "epoch 1/3", 5, 10, unit="steps", detail="loss 0.3")
    emit(None, "nobody", 1)
    assert seen == [ProgressEvent("epoch 1/3", 5, 10, "steps", "loss 0.3")]


def test_an_event_survives_the_json_line_a_child_writes() -> None:
    stream = io.StringIO()
    report = json_line_reporter(stream.write, prefix="@@veil-bench ")
    event = ProgressEvent("timing epochs", 2, 4, "runs")
    report(event)
    line = stream.getvalue()
    assert line.endswith("\n")
    assert line.startswith("@@veil-bench ")
    message = json.loads(line.removeprefix("@@veil-bench "))
    assert message == {
        "progress": {
            "task": "timing epochs",
            "completed": 2,
            "total": 4,
            "unit": "runs",
            "detail": "",
        }
    }
    assert ProgressEvent.from_dict(message["progress"]) == event


def test_an_event_from_an_older_child_without_detail_is_read() -> None:
    wire = {"task": "queries", "completed": 1, "total": None, "unit": "queries"}
    assert ProgressEvent.from_dict(wire) == ProgressEvent("queries", 1, None, "queries")
