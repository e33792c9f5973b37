"""Progress that never falls silent: the heartbeat of ``api.progress_bar`` through a stretch with no units."""

import io
import sys
import time

from l2rebound import api


def test_a_log_shows_the_elapsed_time_through_a_stretch_without_units():
    now = [0.0]
    stream = io.StringIO()
    bar = api.LogProgress(100, stream=stream, clock=lambda: now[0])
    for t in (0.5, 1.2, 5.0, 11.5, 12.0):  # set-up and compiling: no unit done
        now[0] = t
        bar.tick()
    now[0] = 22.0
    bar.update(50)  # the first units: an estimate from here on
    bar.close()
    assert stream.getvalue() == ("l2rebound: 0/100 run-epochs (0%), 1 s elapsed\n"
                                 "l2rebound: 0/100 run-epochs (0%), 12 s elapsed\n"
                                 "l2rebound: 50/100 run-epochs (50%), 22 s elapsed, ~22 s left\n")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_heartbeat_refreshes_a_bar_and_a_log_that_no_unit_moves(monkeypatch):
    monkeypatch.setattr(api, "BEAT", 0.02)
    monkeypatch.setattr(api.LogProgress, "delay", 0.05)
    monkeypatch.setattr(api.LogProgress, "interval", 0.05)
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        with api.progress_bar(10):
            time.sleep(0.5)
        assert "0/10" in stream.getvalue(), type(stream)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with api.progress_bar(10, enabled=False):
        time.sleep(0.1)
    assert sys.stderr.getvalue() == ""


def test_a_wide_network_is_told_its_alignments_before_training(tmp_path):
    from conftest import TINY

    said = []
    wide = TINY.replace(teacher_dims=(2, api.SLOW_ALIGNMENT_WIDTH + 1, 1), epochs=1, align_every=1, runs=1)
    api.execute(wide, tmp_path, progress=False, say=said.append)
    width = api.SLOW_ALIGNMENT_WIDTH + 1
    assert any(line.startswith(f"note: 2 certified alignments of hidden widths {width};") for line in said), said
    said.clear()
    api.execute(TINY, tmp_path, progress=False, say=said.append)
    assert not any(line.startswith("note:") for line in said)
