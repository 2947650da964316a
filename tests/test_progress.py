"""The training job's progress line for the terminal (issue 18 item 3): its content, its throttling by wall
time, and where it goes (the stderr from before rule_log's redirection). Fast: no training."""

from __future__ import annotations

import io
import sys

from spectral_collapse.callbacks import Convergence, ProgressLine, progress_line
from spectral_collapse.rulelog import rule_log, terminal_stream


def test_line_names_job_updates_members_losses_and_time_left():
    line = progress_line("mlp-d4/T1_T2/seed0", 1500, 6000, 3, 31, [2.0, None, 5.0, 3.0, float("nan")], 95.0)
    assert line.startswith("[train mlp-d4/T1_T2/seed0]")
    assert "updates 1500/6000 (25%)" in line
    assert "converged 3/31" in line
    assert "val_loss min 2 median 3" in line  # frozen (None) and non-finite members left out
    assert "<= 1m35s left" in line
    assert "\n" not in line
    assert "no evaluation yet" in progress_line("j", 0, 10, 0, 2, [None, None], None)
    assert "estimating" in progress_line("j", 0, 10, 0, 2, [None, None], None)
    assert "training finished" in progress_line("j", 10, 10, 2, 2, [1.0, 1.0], 0.0, finished=True)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_throttled_by_wall_time_and_estimates_from_the_rate():
    conv = Convergence(2, tolerance=1e-3, patience_evals=2)
    conv.history.append({"step": 200, "val_loss": [4.0, 6.0], "val_D": [0, 0], "val_R": [0, 0],
                         "train_loss": [0, 0], "m2": [None, None]})
    clock, out = _Clock(), io.StringIO()
    p = ProgressLine(conv, "job", 1000, out, interval=5.0, clock=clock)
    written = []
    for t, step in [(0.0, 0), (2.0, 40), (5.0, 100), (9.9, 198), (10.0, 200), (10.5, 210)]:
        clock.t = t
        written.append(p.tick(step))
    assert written == [True, False, True, False, True, False]
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "updates 200/1000" in lines[-1] and "val_loss min 4 median 5" in lines[-1]
    assert "<= 40s left" in lines[-1]  # 20 updates/s over the samples, 800 to go
    clock.t = 11.0
    assert p.tick(220, force=True)  # the last line of a job is never held back


def test_rule_log_keeps_the_terminal_for_progress(tmp_path):
    before = sys.stderr
    assert terminal_stream() is None
    with rule_log(tmp_path / "job.log", "t"):
        assert terminal_stream() is before  # the terminal (or the SLURM job's output), not the log
        assert sys.stderr is not before
    assert terminal_stream() is None


def test_step_timer_keeps_the_cost_of_updates_before_any_member_froze(monkeypatch):
    """train.json's ms_per_step_all_members (issue 21 item 6: no text contract with the log): the median of the
    intervals during which no member was frozen, from the job's own clock."""
    from types import SimpleNamespace

    import spectral_collapse.callbacks as callbacks

    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    conv = SimpleNamespace(frozen=[False, False])
    timer = callbacks.StepTimer(conv)
    trainer = SimpleNamespace(global_step=0, sanity_checking=False)
    timer.on_train_start(trainer, None)
    for step, seconds, frozen_after in [(100, 1.0, [False, False]), (200, 3.0, [True, False]), (300, 0.5, [True, False]),
                                        (400, 0.5, [True, True])]:
        clock.t += seconds
        trainer.global_step = step
        conv.frozen = frozen_after
        timer.on_validation_end(trainer, None)
    # intervals: 10 ms (none frozen), 30 ms (none frozen during it), then 5 and 5 ms with a member frozen
    assert timer.intervals == [(10.0, 0), (30.0, 0), (5.0, 1), (5.0, 1)]
    assert timer.all_members_ms() == 30.0  # median of [10, 30] (upper middle)
    assert callbacks.StepTimer(SimpleNamespace(frozen=[True])).all_members_ms() is None
