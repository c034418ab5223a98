"""Training loop: likelihood training with warm-up, clipping, a non-finite guard, evaluation,
samples, TensorBoard + ``metrics.jsonl``, atomic checkpoints, exact ``resume``, and DDP.

The loop only uses the model's training interface (:class:`~attnflow.models.TrainableModel`):
``loss = net(batch)`` is its objective (``loss_name``: bits/dim for flows, L1 for the ``rrdb``
network), the test split is evaluated with ``evaluation_metric`` (``metric_name``: bits/dim, lower
is better; PSNR, higher is better), and best.pt keeps the best value of that metric.

Pretrained weights and the conditioner schedule: a fresh run first calls ``model.load_pretrained()``
(e.g. SRFlow's ``model.cond.pretrained``: a pretrained RRDB encoder), then the data-dependent
initialisation. ``train.freeze_conditioner_until: f`` (a fraction of ``train.steps``, 0 = never)
freezes ``model.conditioner_parameters()`` for the first ``int(f * steps)`` steps, as SRFlow's
``train_RRDB: false`` / ``train_RRDB_delay: 0.5``: they get no gradient and no optimiser update
(Adam's state for them starts when they start training); the schedule depends on the step only,
so ``--resume`` stays exact.

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
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..config import ConfigError
from ..data import dataset_from_config, with_absolute_root
from ..evaluation.likelihood import evaluate_metric
from ..images import save_grid, temperature_label
from ..models import TrainableModel, build_model, complete_config
from ..nn import AUTOCAST_DTYPES, network_autocast
from .checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from .checks import check_config, check_device
from .guard import DeviceGuard
from .logging import log_attention, log_jsonl, plot_curves
from .optim import lr_factor, make_optimizer
from .pretraining import ConditionerPretraining
from .rundir import (
    RunDirError,
    check_out_path,
    logged_steps,
    prepare_run_dir,
    remove_stale_temp_files,
    resume_config,
    stored_config,
    truncate_metrics,
    write_text_atomic,
)

__all__ = ["TrainingError", "TrainingInterrupted", "ResumableBatches", "train", "data_noise_seed"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


class ResumableBatches(Sampler[list[int]]):
    """Deterministic batches for steps ``start..total-1``: epoch ``e`` uses ``randperm`` seeded by
    ``(seed, e)``, rank ``r`` of ``world`` takes its slice. Restarting at any step reproduces the
    same sequence, which makes ``--resume`` exact."""

    def __init__(
        self, n: int, batch_size: int, total: int, *, seed: int, start: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch_size, self.total = n, batch_size, total
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch < 1:
            raise ConfigError(
                f"the training set has {n} images, fewer than one batch of {batch_size} x {world} "
                f"process(es); lower train.batch_size"
            )

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=gen), epoch
            first = (k * self.world + self.rank) * self.batch_size
            yield perm[first : first + self.batch_size].tolist()


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def data_noise_seed(seed: int, rank: int = 0) -> int:
    """The seed of the global torch RNG once the model is built: the dequantisation noise and
    random flips of run seed ``seed`` (process ``rank``), independent of the model's initialisation."""
    return (int(seed) + int(rank)) * 2_654_435_761 % (2**63) + 1_000_003


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# Ctrl-C
# ------------------------------------------------------------------------------------------------


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C; the message says which checkpoint to ``--resume`` from."""


class _Abort(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without saving."""


class _StopAtStepBoundary:
    """SIGINT handler while training: the first Ctrl-C asks to stop after the current step (which
    is finished and checkpointed); a second one stops at once. Only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None
        self.installed = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise _Abort()
        self.requested = True
        print("\ninterrupt: finishing the current step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self)
                self.installed = True
            except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


def _all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in tensors
               if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex()))


def _optimizer_tensors(optimizer: torch.optim.Optimizer):
    for per_param in optimizer.state.values():
        yield from per_param.values()


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
    world, rank, local_rank = _dist_info()
    is_main = rank == 0
    config = check_config(complete_config(config))
    config["data"] = with_absolute_root(config["data"])  # read the same folder from anywhere
    check_out_path(out)
    if resume and overwrite:
        raise RunDirError("give --resume (continue the run) or --overwrite (start afresh), not both")
    if resume and is_main and not out.is_dir():
        raise RunDirError(f"--resume: {out} does not exist; there is no run to resume (drop --resume to start one)")
    lock = prepare_run_dir(out, resume=resume, overwrite=overwrite) if is_main else None
    stop = _StopAtStepBoundary()  # installed by _train for the loop
    try:
        return _train(config, out, device=device, resume=resume, progress=progress, stop=stop)
    finally:
        stop.__exit__()
        if lock is not None:
            lock.release()


def _train(config: dict, out: Path, *, device, resume: bool, progress: bool, stop: _StopAtStepBoundary) -> dict:
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    best_path = ckpt_dir / "best.pt"
    world, rank, local_rank = _dist_info()
    is_main = rank == 0

    state = None
    if is_main:
        remove_stale_temp_files(out, ckpt_dir)
    if resume:
        if last_path.is_file():
            state = load_checkpoint(last_path)
            config = resume_config(config, state["config"], last_path, int(state["step"]))
        else:
            stored = stored_config(out)
            if stored is None:
                raise RunDirError(
                    f"--resume: {out} holds no run to resume (no {last_path} and no config.yaml); "
                    f"start it without --resume"
                )
            logged = logged_steps(out / "metrics.jsonl")
            if logged > 0:  # resuming from step 0 would drop the logged steps
                raise RunDirError(
                    f"--resume: {out / 'metrics.jsonl'} records training up to step {logged}, but "
                    f"{last_path} is missing, so the run would restart at step 0 and discard them; "
                    f"restore {last_path}, or start afresh with --overwrite (the folder is moved aside)"
                )
            config = resume_config(config, stored[0], stored[1], 0)
        config = check_config(config)
    t = config["train"]
    device_name = check_device(device or t.get("device") or "cpu", "--device" if device else "train.device")
    if world > 1:
        backend = "nccl" if device_name.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        if device_name.startswith("cuda"):
            device_name = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
    dev = torch.device(device_name)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = bool(t.get("tf32", True))
        torch.backends.cudnn.allow_tf32 = bool(t.get("tf32", True))

    _seed_all(int(t["seed"]) + rank)
    shape = config["model"].get("image_shape")
    n_bins = int(config["model"].get("n_bins", 256))
    test_split = config["data"].get("test_split", "test")
    train_set = dataset_from_config(config["data"], "train", shape, augment=True, n_bins=n_bins)
    test_set = dataset_from_config(config["data"], test_split, shape, n_bins=n_bins)
    total = int(t["steps"])
    start = int(state["step"]) if state else 0
    batches = ResumableBatches(
        len(train_set), int(t["batch_size"]), total, seed=int(t["seed"]), start=start, rank=rank, world=world
    )
    # Own generators: a DataLoader iterator otherwise draws its seed from the global RNG, which
    # would shift the dequantisation noise of a resumed run.
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=int(t["num_workers"]),
                        generator=torch.Generator().manual_seed(int(t["seed"])))
    test_loader = DataLoader(test_set, batch_size=int(t["eval_batch_size"]), shuffle=False,
                             generator=torch.Generator())

    model: TrainableModel = build_model(config).to(dev)
    metric, higher = model.metric_name, bool(model.metric_higher_is_better)
    loss_name = model.loss_name
    pretrained: list[str] = []
    # The data-side stream (dequantisation noise, random flips) restarts here from its own seed:
    # building a model draws its initialisation from the global RNG, so without this the noise of
    # seed s would depend on the architecture; with it, every model trained with seed s sees the
    # same batches and the same noise (the paired design of `attnflow compare`).
    torch.manual_seed(data_noise_seed(int(t["seed"]), rank))
    pre_steps = int(t.get("pretrain_conditioner_steps") or 0)
    if pre_steps and world > 1:
        raise ConfigError(
            f"train.pretrain_conditioner_steps={pre_steps} runs in one process only; with several, "
            f"pretrain the conditioner in a run of its own (e.g. the rrdb backbone) and load it "
            f"(model.cond.pretrained)"
        )

    def first_batch():
        return next(iter(DataLoader(train_set, generator=torch.Generator(), batch_sampler=ResumableBatches(
            len(train_set), int(t["batch_size"]), 1, seed=int(t["seed"]), rank=rank, world=world))))

    def start_model() -> None:
        """The model's data-dependent init after the conditioner's pretraining (its own seed, so
        the run's random streams do not depend on when it happens)."""
        model.set_invertible_backprop(False)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(data_noise_seed(int(t["seed"]), rank) + 1)
            model.initialize(first_batch())
        model.set_invertible_backprop(bool(t.get("invertible_backprop")))

    if state:
        load_weights(model, state["model"], last_path)
    else:
        pretrained = model.load_pretrained()  # e.g. a pretrained SRFlow encoder; before the init
        if not pre_steps:  # else after the conditioner's pretraining (start_model)
            model.initialize(first_batch())  # data-dependent init, before any DDP wrap
    pre = ConditionerPretraining(model, t, dev) if pre_steps and start < pre_steps else None
    if state and pre is not None:
        try:
            pre.load_state_dict(state.get("pretraining"), str(last_path))
        except ValueError as err:
            raise RunDirError(f"--resume: {err}") from None
    if t.get("invertible_backprop"):  # after the data-dependent init
        model.set_invertible_backprop(True)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if t.get("compile"):
        net = torch.compile(net)
    low_precision = AUTOCAST_DTYPES.get(t.get("autocast"))
    device_guard = bool(t.get("device_guard"))
    # the device guard restores the optimiser's step counters too: on CUDA they must live there
    capturable = device_guard and dev.type == "cuda"
    optimizer = make_optimizer(model, t, capturable=capturable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(t))
    frozen = ConditionerSchedule(model, t, total, ddp=world > 1)
    best = math.inf  # of the score: the metric, negated when higher is better
    bad_in_a_row = 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        best = _score(state.get(f"best_test_{metric}"), higher)
        bad_in_a_row = int(state.get("bad_steps", 0))
        if best_path.is_file():  # a save killed between best.pt and last.pt: best.pt knows better
            try:
                best = min(best, _score(load_checkpoint(best_path).get(f"best_test_{metric}"), higher))
            except Exception:  # noqa: BLE001 - an unreadable best.pt is replaced by the next best
                pass
    # train.device_guard: the skip decision and its counters stay on the device, read at the log,
    # evaluation and checkpoint points (DeviceGuard); otherwise decided on the host every step
    guard = DeviceGuard(dev, bad_in_a_row) if device_guard else None

    writer = None
    metrics_path = out / "metrics.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            truncate_metrics(metrics_path, start)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start if resume else None)

    # the last checkpoint known good: (step, path)
    last_good: list = [start, last_path] if state else [None, None]

    def good_state() -> bool:
        return bad_in_a_row == 0 and _all_finite(model.state_dict().values()) and _all_finite(
            _optimizer_tensors(optimizer)) and (pre is None or _all_finite(_optimizer_tensors(pre.optimizer)))

    def last_good_text() -> str:
        if last_good[0] is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {last_good[1]} (step {last_good[0]})"

    def too_many_bad_steps(when: str) -> TrainingError:
        return TrainingError(
            f"the loss or its gradient was non-finite for {bad_in_a_row} steps in a row ({when}); "
            f"stopping; {last_good_text()}. Try a lower train.lr or a smaller train.grad_clip."
        )

    def checkpoint(step: int, rng: dict | None = None, *, evaluated: float | None = None) -> bool:
        """Save last.pt (and best.pt when ``evaluated`` is a new best); False if not saved."""
        nonlocal best
        if not is_main:
            return True
        if not good_state():
            return False
        score = _score(evaluated, higher)
        new_best = evaluated is not None and math.isfinite(score) and score < best
        if new_best:
            best = score
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng if rng is not None else rng_state(),
            "config": config,
            f"best_test_{metric}": _unscore(best, higher),
            f"last_test_{metric}": last_test,
            "bad_steps": bad_in_a_row,
            "attnflow_version": _version(),
        }
        if pre is not None and pre.active(step):
            payload["pretraining"] = pre.state_dict()
        if new_best:  # best.pt first: a kill between the two saves keeps the better model
            save_checkpoint(payload, best_path)
        save_checkpoint(payload, last_path)
        last_good[:] = [step, last_path]
        return True

    def evaluate_pretraining(step: int) -> None:
        """The pretraining network's metric on the test split (no samples; best.pt is the model's)."""
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(t["seed"]) + 54321)
            value = evaluate_metric(pre.network, test_loader, t.get("eval_max_batches"))
        pre.network.train()
        log_jsonl(metrics_path, {"step": step, "split": test_split, pre.metric_name: value, "time": time.time()})
        if writer:
            writer.add_scalar(f"{pre.metric_name}/test", value, step)

    def evaluate_and_sample(step: int) -> float:
        nonlocal last_test
        # evaluation leaves the training RNG untouched: a run is the same whenever it evaluates
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(t["seed"]) + 54321)
            test_value = evaluate_metric(model, test_loader, t.get("eval_max_batches"))
            torch.manual_seed(int(t["seed"]) + 12345)
            model.eval()
            cond, targets = _sample_conditions(model, test_set, int(t["n_samples"]))
            # a deterministic model (the rrdb network) gives the same grid at every temperature
            temps = t["sample_temperatures"] if model.stochastic else t["sample_temperatures"][:1]
            for temp in temps:
                n = int(t["n_samples"]) if cond is None else cond.shape[0]
                imgs = model.visualize(cond, model.sample(n, cond, temperature=float(temp)), targets)
                save_grid(imgs, out / "samples" / f"step_{step:07d}_t{temperature_label(float(temp))}.png",
                          header=model.panel_titles)
            if writer:
                log_attention(writer, model, test_set, step)
            model.train()
        log_jsonl(metrics_path, {"step": step, "split": test_split, metric: test_value, "time": time.time()})
        if writer:
            writer.add_scalar(f"{metric}/test", test_value, step)
        plot_curves(metrics_path, out / "curves.png", train_key=loss_name, test_key=metric)
        last_test = test_value
        return test_value

    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=config.get("name", "train"), dynamic_ncols=True)
    model.train()
    step = start
    last_saved = start
    pending = False  # a checkpoint was due but the state was not good: save at the next good step
    running = None
    test_value = last_test = state.get(f"last_test_{metric}") if state else None
    started = time.time()
    phase = "load"
    boundary_rng = rng_state()
    batch_iter = iter(loader)
    try:
        stop.__enter__()
        while step < total:
            phase, boundary_rng = "load", rng_state()
            try:
                batch = next(batch_iter)
            except StopIteration:  # pragma: no cover - the sampler yields exactly total - start
                break
            phase = "forward"  # the model, optimiser and schedule are as at the step boundary
            pretraining = pre is not None and pre.active(step)
            if pretraining:  # only the conditioner and the pretraining head train
                bpd = pre.network(batch)
                opt, params, key = pre.optimizer, pre.parameters(), pre.loss_name
            else:
                frozen.apply(step)  # the conditioner trains from step P + int(f * (steps - P)) on
                with network_autocast(low_precision):  # train.autocast: the conditioner networks
                    bpd = net(batch)  # the model's objective (loss_name): e.g. mean bits/dim of a flow
                opt, params, key = optimizer, model.parameters(), loss_name
            opt.zero_grad(set_to_none=True)
            bpd.backward()
            if not pretraining:
                frozen.drop_grads(step)
            clip = float(t["grad_clip"] or 0) or math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            finite_t = torch.isfinite(bpd) & torch.isfinite(grad_norm)
            if world > 1:  # every rank must agree to skip
                flag = finite_t.to(torch.float32).reshape(1)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite_t = flag[0] > 0
            phase = "update"  # from here to the end of the step the state is in between steps
            if guard is not None:  # decided on the device; the counters are read below
                guard.step(opt, finite_t)
                guard.record(bpd, finite_t)
            elif finite := bool(finite_t):
                opt.step()
                bad_in_a_row = 0
                value = float(bpd.detach())
                running = value if running is None else 0.98 * running + 0.02 * value
            else:
                opt.zero_grad(set_to_none=True)
                bad_in_a_row += 1
                if bad_in_a_row > int(t["max_bad_steps"]):
                    raise too_many_bad_steps(f"at step {step + 1}")
            with warnings.catch_warnings():  # a skipped step still advances the schedule
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
                if pretraining:
                    pre.scheduler.step()
            step += 1
            if pretraining and not pre.active(step):  # the pretraining is over: the model starts
                start_model()
                pre, running = None, None
                if guard is not None:
                    guard.reset_running()
            phase = "boundary"
            final = step == total
            do_eval = step % int(t["eval_every"]) == 0 or final
            do_ckpt = step % int(t["checkpoint_every"]) == 0 or final or pending
            read = step % int(t["log_every"]) == 0 or do_eval or do_ckpt or stop.requested
            if guard is not None and read:  # the one read of the device counters
                bad_in_a_row, running, value, finite = guard.read()
                if bad_in_a_row > int(t["max_bad_steps"]):
                    raise too_many_bad_steps(f"read at step {step}")
            if is_main:
                if bar:
                    bar.update(1)
                    if running is not None and (guard is None or read):
                        bar.set_postfix({key: f"{running:.3f}", "skipped": bad_in_a_row})
                if step % int(t["log_every"]) == 0 and finite:
                    lr = opt.param_groups[0]["lr"]
                    log_jsonl(metrics_path, {"step": step, "split": "train", key: value,
                                              "lr": lr, "grad_norm": float(grad_norm), "time": time.time()})
                    writer.add_scalar(f"{key}/train", value, step)
                    writer.add_scalar("lr", lr, step)
            if do_eval or do_ckpt:
                if is_main:
                    if final:  # save before the final evaluation: a crash there loses nothing
                        pending = not checkpoint(step)
                        if not pending:
                            last_saved = step
                    in_pretraining = pre is not None and pre.active(step)
                    if do_eval and in_pretraining:
                        evaluate_pretraining(step)
                    elif do_eval:
                        test_value = evaluate_and_sample(step)
                    if do_ckpt or do_eval:
                        evaluated = test_value if do_eval and not in_pretraining else None
                        if checkpoint(step, evaluated=evaluated):
                            last_saved, pending = step, False
                        else:
                            pending = True
                if world > 1:
                    dist.barrier()
            if stop.requested and not final:
                raise KeyboardInterrupt
    except _Abort:
        raise TrainingInterrupted(f"stopped at once at step {step}; {last_good_text()}") from None
    except KeyboardInterrupt:
        saved = False
        if guard is not None:  # the skip counter decides whether the state is good to save
            bad_in_a_row = guard.read()[0]
        if is_main and phase in ("load", "forward", "boundary"):
            rng = boundary_rng if phase != "boundary" else None
            saved = step == last_saved and last_good[0] == step
            if not saved and step > last_saved:
                saved = checkpoint(step, rng)
        if saved:
            message = f"saved step {step} to {last_path}; continue with --resume"
        else:
            message = f"{last_good_text()}; continue from it with --resume"
        raise TrainingInterrupted(message) from None
    finally:
        stop.__exit__()
        if bar:
            bar.close()
        if writer:
            writer.close()
    if is_main and pending:
        warnings.warn(f"the last step(s) were skipped (non-finite); {last_good_text()}", RuntimeWarning,
                      stacklevel=3)
    summary = {
        "steps": step,
        f"test_{metric}": test_value,
        f"best_test_{metric}": _unscore(best, higher),
        "seconds": time.time() - started,
        "out_dir": str(out),
        **{k: v for k, v in test_set.source.items() if k != "split"},
        "test_split": test_split,
        "test_images": len(test_set) if not t.get("eval_max_batches") else min(
            len(test_set), int(t["eval_max_batches"]) * int(t["eval_batch_size"])),
        "checkpoint": str(last_path),
        "checkpoint_step": last_good[0],
        "metrics": str(metrics_path),
        "samples": str(out / "samples"),
        "curves": str(out / "curves.png"),
    }
    if pretrained:
        summary["pretrained"] = pretrained
    if pre_steps:
        summary["conditioner_pretraining_steps"] = pre_steps
    if frozen.until > frozen.first:
        summary["conditioner_frozen_steps"] = frozen.until - frozen.first
    if world > 1 and dist.is_initialized():
        dist.barrier()
    return summary


def _score(value, higher: bool) -> float:
    """The metric as a score to minimise (``inf`` for none or a non-finite value)."""
    v = math.inf if value is None else float(value)
    if not math.isfinite(v):
        return math.inf
    return -v if higher else v


def _unscore(score: float, higher: bool) -> float:
    return -score if higher and math.isfinite(score) else score


class ConditionerSchedule:
    """``train.freeze_conditioner_until``: the model's conditioner parameters are frozen for the
    first ``int(f * (total - P))`` steps of the model's training, which starts after the
    conditioner's pretraining (``P = train.pretrain_conditioner_steps``, 0 by default): 0-based
    steps ``first = P <= step < until = P + int(f * (total - P))``; then they train.

    Frozen parameters get no gradient (``requires_grad`` off: the encoder's backward is skipped;
    under DDP, whose reducer fixes the trainable set, their gradients are dropped after the
    backward instead), so the optimiser leaves them and their state untouched. The state is a
    function of the step alone, which keeps ``--resume`` exact.
    """

    def __init__(self, model: TrainableModel, t: dict, total: int, *, ddp: bool = False) -> None:
        fraction = float(t.get("freeze_conditioner_until") or 0)
        self.params = model.conditioner_parameters() if fraction > 0 else []
        if fraction > 0 and not self.params:
            raise ConfigError(
                f"train.freeze_conditioner_until={fraction:g}: the model ({type(model).__name__}) has "
                f"no conditioner to freeze; use 0"
            )
        self.first = int(t.get("pretrain_conditioner_steps") or 0)
        self.until = self.first + int(fraction * (total - self.first))
        self.ddp = ddp
        self.state: bool | None = None

    def frozen(self, step: int) -> bool:
        return self.first <= step < self.until

    def apply(self, step: int) -> None:
        """Before the forward of 0-based step ``step``."""
        frozen = self.frozen(step)
        if not self.params or self.ddp or frozen == self.state:
            return
        for p in self.params:
            p.requires_grad_(not frozen)
        self.state = frozen

    def drop_grads(self, step: int) -> None:
        """After the backward (DDP only: the gradients of frozen parameters are dropped)."""
        if self.ddp and self.params and self.frozen(step):
            for p in self.params:
                p.grad = None


def _sample_conditions(model: TrainableModel, dataset: Dataset, n: int) -> tuple[Tensor | None, Tensor | None]:
    """For conditional models, the conditions and targets of the first ``n`` (at most 16) test
    items (the grids show condition | sample | target); ``(None, None)`` otherwise."""
    if not model.conditional:
        return None, None
    n = min(n, len(dataset), 16)
    batch = default_collate([dataset[i] for i in range(n)])
    return model.sample_conditions(batch), model.unpack(batch)[0]


def _version() -> str:
    from .. import __version__

    return __version__
