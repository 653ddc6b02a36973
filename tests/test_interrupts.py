"""An interrupt that something swallowed (a finalizer, a library's catch-all) is raised again."""
import os
import signal
import time

import pytest
import torch
from torch import nn

from bench import interrupts
from bench.core.datasets import Data, DatasetInfo, Split
from bench.core.spec import TrainConfig
from bench.core.training import evaluate, fit
from bench.errors import Terminated

pytestmark = pytest.mark.spawns  # every test here starts interpreters


def tiny_data() -> Data:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 2, (64,), generator=gen))
    return Data(DatasetInfo("noise", (1, 4, 4), (0.5,), (0.25,), 0, False), split, split, None)


@pytest.fixture
def installed():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    yield
    interrupts.handled()
    for s, h in previous.items():
        signal.signal(s, h)


def swallow(sig) -> None:
    """Deliver `sig` to this process and drop the exception, as a `__del__` would."""
    try:
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises long before this ends
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_swallowed_interrupt_stops_the_next_training_and_evaluation_batch(installed, sig, exc):
    data = tiny_data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    swallow(sig)
    with pytest.raises(exc):
        fit(model, data, TrainConfig(epochs=1, lr=0.1, batch_size=16, augment=False), seed=0, device="cpu")
    with pytest.raises(exc):
        evaluate(model, data.val, data.info, device="cpu")


def test_once_handled_the_interrupt_is_not_raised_again(installed):
    swallow(signal.SIGINT)
    interrupts.handled()
    interrupts.raise_pending()  # nothing left to raise
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_an_interrupted_exit_leaves_no_semaphore_behind():
    """A forkserver lock still alive when an interrupted `bench run` leaves: os._exit alone skipped
    multiprocessing's exit hook, and the resource tracker reported the lock as leaked."""
    import subprocess
    import sys

    script = ("import multiprocessing as mp; lock = mp.get_context('forkserver').Lock(); "
              "from bench.interrupts import exit_now; exit_now(143)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143
    assert "leaked semaphore" not in proc.stderr
