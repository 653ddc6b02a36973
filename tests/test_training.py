"""The training loop: learns real MNIST, detects divergence, runs hooks, resumes from a checkpoint
(the mechanics on random MNIST-shaped images: they need no real digits)."""
import pytest
import torch

from bench.core import models
from bench.core.spec import TrainConfig
from bench.core.training import Hook, evaluate, fit
from bench.errors import DivergenceError


def lenet():
    torch.manual_seed(0)
    m = models.build("lenet5", 1, 28, 10)
    models.init_weights(m)
    return m


def test_short_mnist_training_beats_95_percent(mnist_small):
    result = fit(lenet(), mnist_small, TrainConfig(epochs=3, lr=0.05, batch_size=64, augment=False), seed=0,
                 device="cpu", progress=False)
    _, acc = evaluate(result.model, mnist_small.test, mnist_small.info)
    assert acc > 0.95
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["val_acc"] > result.history[0]["val_acc"] - 0.01


def test_nan_loss_fails_the_run_with_the_reason(noise_mnist):
    with pytest.raises(DivergenceError, match="loss became (nan|inf).*lower the learning rate"):
        fit(lenet(), noise_mnist, TrainConfig(epochs=1, lr=1e6, momentum=0.0, batch_size=64, augment=False),
            seed=0, device="cpu", progress=False)


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def on_fit_start(self, ctx):
        self.events.append("start")

    def transform_grads(self, ctx):
        # a method can rewrite the step: zero every gradient of the first conv
        ctx.model.features[0].weight.grad.zero_()
        self.events.append("grads")

    def on_epoch_end(self, ctx):
        self.events.append(f"epoch{ctx.epoch}")
        ctx.stop = True

    def on_fit_end(self, ctx):
        self.events.append("end")


def test_hooks_can_alter_the_step_and_stop_training(noise_mnist):
    m = lenet()
    before = m.features[0].weight.detach().clone()
    hook = Recorder()
    cfg = TrainConfig(epochs=3, lr=0.05, momentum=0.0, weight_decay=0.0, batch_size=256, augment=False)
    result = fit(m, noise_mnist, cfg, seed=0, hooks=[hook], device="cpu", progress=False)
    assert hook.events[0] == "start" and hook.events[-2:] == ["epoch0", "end"] and "grads" in hook.events
    assert len(result.history) == 1  # ctx.stop honoured
    torch.testing.assert_close(result.model.features[0].weight, before)


def test_checkpoint_resumes_where_a_killed_run_stopped(noise_mnist, tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=128, augment=False)
    full = fit(lenet(), noise_mnist, cfg, seed=0, device="cpu", progress=False)
    ckpt = tmp_path / "ft.ckpt"

    class Kill(Hook):
        def on_epoch_end(self, ctx):
            if ctx.epoch == 0:
                ctx.stop = True  # the checkpoint after epoch 1 is written, then the "kill"
    fit(lenet(), noise_mnist, cfg, seed=0, hooks=[Kill()], device="cpu", progress=False, checkpoint=ckpt)
    assert ckpt.exists()
    resumed = fit(lenet(), noise_mnist, cfg, seed=0, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.history == full.history  # to the digit: every RNG and the optimizer state come back
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.resumed_s > 0 and resumed.seconds > resumed.resumed_s
