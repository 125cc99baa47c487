"""Long jobs report progress on the console (stdout) when their bar goes to a log file."""

import time

from latentrec.io_utils import progress


def test_status_lines_reach_stdout_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("LATENTREC_STATUS_EVERY", "0.01")
    bar = progress(total=3, desc="sft", unit="step")
    for _ in range(3):
        time.sleep(0.02)
        bar.update(1)
    bar.close()
    for _ in progress(range(2), desc="decode", unit="batch", mininterval=0):  # tqdm's updates: not counted twice
        time.sleep(0.02)
    lines = capsys.readouterr().out.splitlines()
    assert "[latentrec] sft: 1/3 step in 0:00, ~0:00 left" in lines
    assert lines[2].startswith("[latentrec] sft: 3/3 step")
    assert [ln.split(" in ")[0] for ln in lines[3:]] == [
        "[latentrec] decode: 1/2 batch",
        "[latentrec] decode: 2/2 batch",
    ]


def test_status_is_off_for_non_main_processes_and_on_request(capsys, monkeypatch):
    monkeypatch.setenv("LATENTREC_STATUS_EVERY", "0.01")
    for _ in progress(range(2), desc="rank1", disable=True):
        time.sleep(0.02)
    monkeypatch.setenv("LATENTREC_STATUS_EVERY", "0")
    for _ in progress(range(2), desc="off"):
        time.sleep(0.02)
    assert capsys.readouterr().out == ""
