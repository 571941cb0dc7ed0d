"""Training hooks: a stop on SIGINT / SIGTERM after a completed iteration, checkpointed and resumable exactly."""
import logging
import os
import signal

import pytest
import torch
from helpers.toy_training import ToyDetector, toy_cfg, toy_run

from glip.engine.hooks import StopOnSignalHook, TrainingInterrupted


@pytest.fixture(autouse=True)
def sigint_handled():
    """Run as a foreground process would: a background job starts with SIGINT ignored, which the hook respects."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def signalling_detector(schedule):
    """A ToyDetector class that sends itself the signals ``schedule[call]`` during its forward of that call."""

    class SignallingDetector(ToyDetector):
        def forward(self, *args, **kwargs):
            losses = super().forward(*args, **kwargs)
            for signum in schedule.get(len(self.calls), ()):
                os.kill(os.getpid(), signum)
            return losses

    return SignallingDetector


def test_sigterm_mid_step_checkpoints_that_iteration_and_resumes_exactly(tmp_path, caplog):
    cfg = toy_cfg(max_iter=6)
    full, *_ = toy_run(cfg, tmp_path / "full")
    ema_full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["model_ema"]
    previous_handler = signal.getsignal(signal.SIGTERM)

    with caplog.at_level(logging.INFO, logger="glip.trainer"), pytest.raises(TrainingInterrupted) as stop:
        toy_run(cfg, tmp_path / "split", period=4, model_cls=signalling_detector({3: [signal.SIGTERM]}))
    checkpoint = str(tmp_path / "split" / "model_0000003.pth")
    assert (stop.value.iteration, stop.value.exit_code, stop.value.checkpoint) == (3, 128 + signal.SIGTERM, checkpoint)
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    assert sorted(os.listdir(tmp_path / "split")) == ["last_checkpoint", "model_0000003.pth"]
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 3
    lines = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert lines == ["Training stopped by SIGTERM after iteration 3; checkpoint {}. Run the same command again to "
                     "resume from it".format(checkpoint)]

    resumed, _, scheduler, _, arguments = toy_run(cfg, tmp_path / "split", seed=123)
    assert arguments["iteration"] == 6 and scheduler.last_epoch == 6 and resumed.calls == full.calls[3:]
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    ema_resumed = torch.load(tmp_path / "split" / "model_final.pth", weights_only=True)["model_ema"]
    for key, value in ema_full.items():
        assert torch.equal(value, ema_resumed[key]), key


def test_sigint_at_a_checkpointed_iteration_writes_nothing_more(tmp_path):
    cfg = toy_cfg(max_iter=6)
    with pytest.raises(TrainingInterrupted) as stop:
        toy_run(cfg, tmp_path, period=2, model_cls=signalling_detector({4: [signal.SIGINT]}))
    assert stop.value.exit_code == 128 + signal.SIGINT and stop.value.iteration == 4
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth", "model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def test_a_second_signal_acts_at_once(tmp_path):
    cfg = toy_cfg(max_iter=6)
    with pytest.raises(KeyboardInterrupt):
        toy_run(cfg, tmp_path, period=10, model_cls=signalling_detector({2: [signal.SIGINT, signal.SIGINT]}))
    assert not os.path.exists(tmp_path / "last_checkpoint")  # cut short inside iteration 2: nothing written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_without_an_output_folder_says_nothing_was_written():
    stop = TrainingInterrupted(signal.SIGTERM, 7, None)
    assert str(stop) == "Training stopped by SIGTERM after iteration 7; no checkpoint written (no output folder)"


def test_handlers_are_left_alone_outside_the_main_thread():
    import threading

    hook, seen = StopOnSignalHook(), []
    thread = threading.Thread(target=lambda: (hook.before_train(None), seen.append(dict(hook._previous))))
    thread.start()
    thread.join()
    assert seen == [{}]


def _stop_worker(rank, init_file, out_dir, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
    try:
        schedule = {2: [signal.SIGTERM]} if rank == 1 else {}  # only rank 1 is signalled
        try:
            toy_run(toy_cfg(max_iter=6), os.path.join(out_dir, str(rank)), period=10,
                    model_cls=signalling_detector(schedule))
        except TrainingInterrupted as stop:
            results[rank] = (stop.iteration, stop.signum)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawning two interpreters takes tens of seconds on the shared machine
def test_every_rank_stops_after_the_same_iteration(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_stop_worker, args=(str(tmp_path / "init"), str(tmp_path), results), nprocs=2)
    assert dict(results) == {0: (2, signal.SIGTERM), 1: (2, signal.SIGTERM)}
    for rank in ("0", "1"):  # both wrote here (each its own folder): the checkpoint of iteration 2
        assert (tmp_path / rank / "last_checkpoint").read_text() == "model_0000002.pth"


def test_an_ignored_signal_stays_ignored(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a background job
    try:
        _, _, _, _, arguments = toy_run(toy_cfg(max_iter=3), tmp_path,
                                        model_cls=signalling_detector({2: [signal.SIGINT]}))
        assert arguments["iteration"] == 3 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
