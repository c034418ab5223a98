"""Training loop: likelihood training with warm-up, clipping, a non-finite guard, evaluation,
samples, TensorBoard + ``metrics.jsonl``, atomic checkpoints, exact ``resume``, and DDP.

:func:`train` takes the run folder and hands the run to a :class:`Trainer`: its set-up (fresh or
resumed), then per step :meth:`Trainer.step` and what is due at the step boundary (a log line,
:meth:`Trainer.evaluate`, :meth:`Trainer.save`). It uses only the model's training interface
(:class:`~attnflow.models.TrainableModel`): ``loss = net(batch)`` is its objective (``loss_name``),
the test split is evaluated with ``evaluation_metric`` (``metric_name``: bits/dim, lower is better;
PSNR, higher is better), and best.pt keeps the best value of that metric. A fresh run loads the
model's pretrained weights (``model.load_pretrained()``, e.g. SRFlow's ``model.cond.pretrained``)
before its data-dependent initialisation; ``train.freeze_conditioner_until`` is :mod:`.freeze`.

Output folder::

    OUT/.lock                  held while a run writes the folder (pid, host); see rundir.py
    OUT/config.yaml            the resolved config
    OUT/metrics.jsonl          one JSON line per log/eval event
    OUT/tb/                    TensorBoard scalars
    OUT/checkpoints/last.pt    latest (atomic); best.pt: best test metric (lowest bits/dim, highest PSNR)
    OUT/samples/step_XXXXXXX_tT.png   sample grids at each evaluation
    OUT/curves.png             train / test bits/dim against step
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..config import validate_config

# tests patch build_model, evaluate_metric, save_checkpoint and log_jsonl in this module: the
# Trainer calls them by these names
from ..data import dataset_from_config, run_data_config
from ..evaluation.likelihood import evaluate_metric
from ..models import TrainableModel, build_model
from ..nn import AUTOCAST_DTYPES, network_autocast
from .batches import ResumableBatches, data_noise_seed, seed_all
from .checkpoint import load_weights, rng_state, save_checkpoint, set_rng_state
from .distributed import all_agree, dist_info, training_device
from .freeze import ConditionerSchedule
from .guard import make_guard
from .interrupt import StopAtStepBoundary, StopNow, TrainingInterrupted
from .logging import log_attention, log_jsonl, plot_curves
from .optim import lr_factor, make_optimizer
from .rundir import (
    RunDirError,
    check_out_path,
    prepare_run_dir,
    remove_stale_temp_files,
    truncate_metrics,
    write_text_atomic,
)
from .runstate import RunState, finite_state, resume_point, score, unscore
from .samples import save_samples

__all__ = ["TrainingError", "TrainingInterrupted", "ResumableBatches", "train", "data_noise_seed", "Trainer"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


def train(
    config: dict,
    out_dir: str | Path,
    *,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train the model a config describes; returns a summary (final test bits/dim, paths).

    ``out_dir`` belongs to this run while it trains (``OUT/.lock``). A new run refuses a non-empty
    ``out_dir``; ``overwrite=True`` renames the old folder aside (``OUT.old-YYYYmmdd-HHMMSS``).

    With ``resume=True``, training continues from ``out_dir/checkpoints/last.pt`` exactly where it
    stopped (same data order, RNG states, optimiser and scheduler), or from step 0 with
    ``out_dir/config.yaml`` when no checkpoint was written yet. The stored config is used: a
    setting of ``config`` that differs from it is a ``ConfigError``, except ``train.steps`` (which
    may be raised) and :data:`~attnflow.training.rundir.RESUME_SAFE_KEYS`.

    The first Ctrl-C (SIGINT) stops after the current step and saves a checkpoint; the run then
    raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``). A second Ctrl-C stops at once.
    """
    out = Path(out_dir)
    is_main = dist_info()[1] == 0
    config = validate_config(config)
    config["data"] = run_data_config(config["data"])  # absolute root, the held-out split
    check_out_path(out)
    if resume and overwrite:
        raise RunDirError("give --resume (continue the run) or --overwrite (start afresh), not both")
    if resume and is_main and not out.is_dir():
        raise RunDirError(f"--resume: {out} does not exist; there is no run to resume (drop --resume to start one)")
    lock = prepare_run_dir(out, resume=resume, overwrite=overwrite) if is_main else None
    try:
        return Trainer(config, out, device=device, resume=resume, progress=progress).train()
    finally:
        if lock is not None:
            lock.release()


class Trainer:
    """One run in ``out``: :meth:`__init__` sets it up (fresh, or resumed from ``last.pt``),
    :meth:`train` trains it to ``train.steps`` and returns the summary."""

    def __init__(self, config: dict, out: Path, *, device: str | None, resume: bool, progress: bool) -> None:
        self.out, self.resume, self.progress = out, resume, progress
        self.last_path = out / "checkpoints" / "last.pt"
        self.best_path = out / "checkpoints" / "best.pt"
        self.metrics_path = out / "metrics.jsonl"
        self.world, self.rank, _ = dist_info()
        self.is_main = self.rank == 0
        self.stop = StopAtStepBoundary()
        if self.is_main:  # a save or write killed half-way leaves a temp file behind
            remove_stale_temp_files(out, out / "checkpoints")
        state = None
        if resume:  # the run's stored settings win; last.pt holds where it stopped
            config, state = resume_point(config, out)
        self.config, self.t = config, config["train"]
        self.total = self.t["steps"]
        self.dev = training_device(device, self.t)
        self.cuda_devices = [self.dev] if self.dev.type == "cuda" else []  # for fork_rng
        seed_all(self.t["seed"] + self.rank)  # the model's initialisation draws from these
        start = int(state["step"]) if state else 0
        self._data(start)
        self._model(state)
        self._optimizer(state)
        self._outputs(start)

    # --- set-up -----------------------------------------------------------------------------------
    def _data(self, start: int) -> None:
        """The train and test sets; the loader yields the batches of steps ``start ..``."""
        t, data = self.t, self.config["data"]
        shape = self.config["model"]["image_shape"]
        n_bins = self.config["model"]["n_bins"]
        self.test_split = data.get("test_split", "test")
        self.train_set = dataset_from_config(data, "train", shape, augment=True, n_bins=n_bins)
        self.test_set = dataset_from_config(data, self.test_split, shape, n_bins=n_bins)
        batches = ResumableBatches(len(self.train_set), t["batch_size"], self.total, seed=t["seed"],
                                   start=start, rank=self.rank, world=self.world)
        # Own generators: a DataLoader iterator otherwise draws its seed from the global RNG, which
        # would shift the dequantisation noise of a resumed run.
        self.loader = DataLoader(self.train_set, batch_sampler=batches, num_workers=t["num_workers"],
                                 generator=torch.Generator().manual_seed(t["seed"]))
        self.test_loader = DataLoader(self.test_set, batch_size=t["eval_batch_size"], shuffle=False,
                                      generator=torch.Generator())

    def _model(self, state: dict | None) -> None:
        """The model (initialised, or a resumed run's weights) and ``net``, what the step calls."""
        t = self.t
        model: TrainableModel = build_model(self.config).to(self.dev)
        self.metric, self.higher = model.metric_name, bool(model.metric_higher_is_better)
        # The data-side stream (dequantisation noise, random flips) restarts here from its own seed:
        # building a model draws its initialisation from the global RNG, so without this the noise of
        # seed s would depend on the architecture; with it, every model trained with seed s sees the
        # same batches and the same noise (the paired design of `attnflow compare`).
        torch.manual_seed(data_noise_seed(t["seed"], self.rank))
        self.pretrained: list[str] = []
        if state:
            load_weights(model, state["model"], self.last_path)
        else:
            self.pretrained = model.load_pretrained()  # e.g. a pretrained SRFlow encoder; before the init
            first = ResumableBatches(len(self.train_set), t["batch_size"], 1, seed=t["seed"],
                                     rank=self.rank, world=self.world)
            batch = next(iter(DataLoader(self.train_set, generator=torch.Generator(), batch_sampler=first)))
            model.initialize(batch)  # data-dependent init (step 0's batch), before any DDP wrap
        if t["invertible_backprop"]:  # after the data-dependent init
            model.set_invertible_backprop(True)
        net: nn.Module = model
        if self.world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None
            )
        if t["compile"]:
            net = torch.compile(net)
        self.model, self.net = model, net
        self.low_precision = AUTOCAST_DTYPES.get(t["autocast"])  # train.autocast: the conditioner networks
        self.clip = t["grad_clip"] or math.inf

    def _optimizer(self, state: dict | None) -> None:
        """The optimiser, schedule, freeze schedule and non-finite guard; a resumed run's states,
        RNG and counters."""
        t = self.t
        device_guard = t["device_guard"]
        # the device guard restores the optimiser's step counters too: on CUDA they must live there
        self.optimizer = make_optimizer(self.model, t, capturable=device_guard and self.dev.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(t))
        self.frozen = ConditionerSchedule(self.model, t, self.total, ddp=self.world > 1)
        if state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.run = RunState.resumed(state, self.metric, self.higher, self.best_path)
        else:
            self.run = RunState(step=0)
        self.guard = make_guard(self.dev, self.run.bad_in_a_row, on_device=device_guard)

    def _outputs(self, start: int) -> None:
        """config.yaml, and the logs cut back to ``start`` (a resumed run rewrites what followed)."""
        self.writer = None
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if self.resume:
            truncate_metrics(self.metrics_path, start)
        write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.out / "tb"), purge_step=start if self.resume else None)

    # --- the run ----------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``train.steps``; returns the summary."""
        run = self.run
        self.bar = None
        if self.is_main and self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=run.step, desc=self.config.get("name", "train"),
                            dynamic_ncols=True)
        self.model.train()
        started = time.time()
        batches = iter(self.loader)
        with self.stop:  # the first Ctrl-C is acted on at the next step boundary, a second at once
            try:
                while run.step < self.total:
                    run.boundary_rng = rng_state()  # loading the batch draws its noise
                    grad_norm = self.step(next(batches))
                    self._at_boundary(grad_norm)
            except StopNow as err:
                raise TrainingInterrupted(f"stopped at once at step {run.step}; {self._last_good()}") from err
            except KeyboardInterrupt as err:
                raise self._interrupted() from err
            finally:
                if self.bar:
                    self.bar.close()
                if self.writer:
                    self.writer.close()
        if self.is_main and run.pending:
            warnings.warn(f"the last step(s) were skipped (non-finite); {self._last_good()}", RuntimeWarning,
                          stacklevel=3)
        summary = self._summary(time.time() - started)
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
        return summary

    def step(self, batch) -> Tensor:
        """One optimiser step on ``batch``, skipped by the guard if the loss or its gradient is
        not finite; returns the gradient norm (before clipping)."""
        run = self.run
        self.frozen.apply(run.step)
        with network_autocast(self.low_precision):
            loss = self.net(batch)  # the model's objective (loss_name): e.g. mean bits/dim of a flow
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.frozen.drop_grads(run.step)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        if self.world > 1:
            finite = all_agree(finite)
        run.updating = True
        self.guard.step(self.optimizer, finite)
        self.guard.record(loss, finite)
        with warnings.catch_warnings():  # a skipped step still advances the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        run.step += 1
        run.updating, run.boundary_rng = False, None  # a step boundary again, at the current RNG
        return grad_norm

    def _at_boundary(self, grad_norm: Tensor) -> None:
        """What is due after a step: the guard's read, the log line, evaluation and checkpoint;
        here the first Ctrl-C ends the run."""
        run, t = self.run, self.t
        final = run.step == self.total
        log = run.step % t["log_every"] == 0
        do_eval = run.step % t["eval_every"] == 0 or final
        do_ckpt = run.step % t["checkpoint_every"] == 0 or final or run.pending
        # the device guard's counters are read only where something needs them (a host sync)
        read = self.guard.read_every_step or log or do_eval or do_ckpt or self.stop.requested
        loss = self._read_guard() if read else None
        if self.is_main:
            self._report(loss if log else None, grad_norm, fresh=read)
        if do_eval or do_ckpt:
            if self.is_main:
                if final:  # save before the final evaluation: a crash there loses nothing
                    self.save(run.step)
                if do_eval:
                    self.evaluate(run.step)
                self.save(run.step, evaluated=run.last_test if do_eval else None)
            else:  # the main process's decision (the same state), so every process meets the barrier
                run.pending = not self._good_state()
            if self.world > 1:
                dist.barrier()
        if self.stop.requested and not final:
            raise KeyboardInterrupt

    def _read_guard(self) -> float | None:
        """Read the guard's counters into the run state; the last step's loss, None if it was
        skipped. Too many skipped steps in a row end the run."""
        run = self.run
        run.bad_in_a_row, run.running, loss, finite = self.guard.read()
        if run.bad_in_a_row > self.t["max_bad_steps"]:
            when = f"at step {run.step}" if self.guard.read_every_step else f"read at step {run.step}"
            raise TrainingError(
                f"the loss or its gradient was non-finite for {run.bad_in_a_row} steps in a row ({when}); "
                f"stopping; {self._last_good()}. Try a lower train.lr or a smaller train.grad_clip."
            )
        return loss if finite else None

    def _report(self, loss: float | None, grad_norm: Tensor, *, fresh: bool) -> None:
        """The progress bar (its running loss when ``fresh``ly read) and the train log line of a
        logged step whose update was taken (``loss``)."""
        run = self.run
        if self.bar:
            self.bar.update(1)
            if run.running is not None and fresh:
                self.bar.set_postfix({self.model.loss_name: f"{run.running:.3f}", "skipped": run.bad_in_a_row})
        if loss is None:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        log_jsonl(self.metrics_path, {"step": run.step, "split": "train", self.model.loss_name: loss, "lr": lr,
                                      "grad_norm": float(grad_norm), "time": time.time()})
        self.writer.add_scalar(f"{self.model.loss_name}/train", loss, run.step)
        self.writer.add_scalar("lr", lr, run.step)

    def evaluate(self, step: int) -> float:
        """The test metric, the sample grids and attention maps at ``step``."""
        t, model = self.t, self.model
        # evaluation leaves the training RNG untouched: a run is the same whenever it evaluates
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.manual_seed(t["seed"] + 54321)
            value = evaluate_metric(model, self.test_loader, t["eval_max_batches"])
            torch.manual_seed(t["seed"] + 12345)
            model.eval()
            save_samples(model, self.test_set, t, self.out / "samples", step)
            if self.writer:
                log_attention(self.writer, model, self.test_set, step)
            model.train()
        log_jsonl(self.metrics_path, {"step": step, "split": self.test_split, self.metric: value, "time": time.time()})
        if self.writer:
            self.writer.add_scalar(f"{self.metric}/test", value, step)
        plot_curves(self.metrics_path, self.out / "curves.png", train_key=self.model.loss_name, test_key=self.metric)
        self.run.last_test = value
        return value

    def save(self, step: int, rng: dict | None = None, *, evaluated: float | None = None) -> bool:
        """Save last.pt (best.pt first when ``evaluated`` is a new best) if the state is good;
        else mark a checkpoint pending and return False. ``rng``: the RNG state to store (default:
        the current one)."""
        run = self.run
        if not self._good_state():
            run.pending = True
            return False
        value = score(evaluated, self.higher)
        new_best = evaluated is not None and math.isfinite(value) and value < run.best
        if new_best:
            run.best = value
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "rng": rng if rng is not None else rng_state(),
            "config": self.config,
            f"best_test_{self.metric}": unscore(run.best, self.higher),
            f"last_test_{self.metric}": run.last_test,
            "bad_steps": run.bad_in_a_row,
            "attnflow_version": _version(),
        }
        if new_best:  # best.pt first: a kill between the two saves keeps the better model
            save_checkpoint(payload, self.best_path)
        save_checkpoint(payload, self.last_path)
        run.last_good_step = run.last_saved = step
        run.pending = False
        return True

    def _good_state(self) -> bool:
        """Only a good state is saved: the last step was taken and everything is finite."""
        return self.run.bad_in_a_row == 0 and finite_state(self.model, self.optimizer)

    def _interrupted(self) -> TrainingInterrupted:
        """After the first Ctrl-C (or any KeyboardInterrupt): save the state unless it is saved
        already or caught inside an update; the error says what to resume from."""
        run = self.run
        run.bad_in_a_row = self.guard.read()[0]  # decides whether the state is good to save
        saved = False
        if self.is_main and not run.updating:
            saved = run.step == run.last_saved and run.last_good_step == run.step
            if not saved and run.step > run.last_saved:
                saved = self.save(run.step, run.boundary_rng)
        if saved:
            return TrainingInterrupted(f"saved step {run.step} to {self.last_path}; continue with --resume")
        return TrainingInterrupted(f"{self._last_good()}; continue from it with --resume")

    def _last_good(self) -> str:
        if self.run.last_good_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.last_path} (step {self.run.last_good_step})"

    def _summary(self, seconds: float) -> dict:
        t, run, test_set = self.t, self.run, self.test_set
        summary = {
            "steps": run.step,
            f"test_{self.metric}": run.last_test,
            f"best_test_{self.metric}": unscore(run.best, self.higher),
            "seconds": seconds,
            "out_dir": str(self.out),
            **{k: v for k, v in test_set.source.items() if k != "split"},
            "test_split": self.test_split,
            "test_images": len(test_set) if not t["eval_max_batches"] else min(
                len(test_set), t["eval_max_batches"] * t["eval_batch_size"]),
            "checkpoint": str(self.last_path),
            "checkpoint_step": run.last_good_step,
            "metrics": str(self.metrics_path),
            "samples": str(self.out / "samples"),
            "curves": str(self.out / "curves.png"),
        }
        if self.pretrained:
            summary["pretrained"] = self.pretrained
        if self.frozen.until > 0:
            summary["conditioner_frozen_steps"] = self.frozen.until
        return summary


def _version() -> str:
    from .. import __version__

    return __version__
