"""`runner.run_tuners`: several Tuners at the same time (a search beside the grids), errors handed back."""
from __future__ import annotations

import threading

import pytest

from adk_ray.service.runner import run_tuners


def test_jobs_run_at_the_same_time():
    # each job waits for the other at a barrier: run one after the other, the first would time out
    barrier, met = threading.Barrier(2, timeout=10), []

    def job(stop):
        assert stop is not None and not stop.is_set()
        barrier.wait()
        met.append(threading.current_thread().name)

    run_tuners([job, job])
    assert len(set(met)) == 2


def test_a_single_job_runs_in_this_thread_without_a_stop_event():
    seen = []
    run_tuners([lambda stop: seen.append((stop, threading.current_thread()))])
    assert seen == [(None, threading.main_thread())]


def test_an_error_is_raised_after_the_other_jobs_finish():
    finished = threading.Event()

    def fails(stop):
        raise ValueError("trial setup broke")

    def slow(stop):
        threading.Event().wait(0.5)
        finished.set()

    with pytest.raises(ValueError, match="trial setup broke"):
        run_tuners([fails, slow])
    assert finished.is_set()


def test_ctrl_c_stops_every_job_then_is_raised(tmp_path):
    # Ctrl+C reaches the main thread only: run_tuners sets `stop` (which ends each Tuner at its next
    # step, runner._StopAll) and raises KeyboardInterrupt once every job has returned
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "interrupt.py"
    script.write_text(
        "import sys, threading\n"
        "from adk_ray.service.runner import run_tuners\n"
        "stopped = []\n"
        "both = threading.Barrier(2)\n"
        "def job(stop):\n"
        "    if both.wait(30) == 0:  # one line once both run: two prints could interleave\n"
        "        print('running', flush=True)\n"
        "    stop.wait(30)\n"
        "    stopped.append(stop.is_set())\n"
        "try:\n"
        "    run_tuners([job, job])\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', stopped, flush=True)\n"
        "    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"   # both jobs started
    time.sleep(0.2)  # both are inside stop.wait
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted [True, True]" in out
