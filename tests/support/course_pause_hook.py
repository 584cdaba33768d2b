"""An mmengine hook for tests: training blocks after a given iteration until the test stops it.

Makes "interrupt between two checkpoints" deterministic: no timing, however fast the machine.
"""
import time

from mmengine.hooks import Hook


class PauseAfterIteration(Hook):
    priority = "LOWEST"  # after the logger and checkpoint hooks of that iteration have run

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            while True:  # until the test's stop() interrupts the process group
                time.sleep(0.05)
