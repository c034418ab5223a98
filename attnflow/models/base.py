"""The one contract every model family follows (:class:`FlowModel`).

A model is a normalizing flow over integer images ``x`` (``[B, C, H, W]``, pixel values
``0..n_bins-1`` as float or uint8), optionally given a condition ``cond`` (a low-resolution image for
super-resolution, a label map for translation):

* ``log_prob(x, cond) -> [B]``: ``log p(x | cond)`` of the integer image in nats (a variational bound
  under uniform dequantisation);
* ``encode(x, cond) -> (latents, logdet)`` and its exact inverse ``decode(latents, cond) -> x``;
* ``sample(n, cond, *, temperature)``: uint8 images, every Gaussian's std scaled by ``temperature``;
* ``objective(batch)``, ``initialize(batch)``, ``bits_per_dim(batch)`` take a batch exactly as the
  task's DataLoader yields it (a tensor for generation, an ``(x, cond)`` pair otherwise), so the
  training loop and evaluation need no per-family code; ``forward(batch)`` is ``objective(batch)``
  so that DistributedDataParallel, which wraps ``forward``, works;
* ``task`` names the kind of model: ``"generation"``, ``"super_resolution"`` or ``"translation"``.

The part of the contract the training loop and the commands use (``task``, ``objective``,
``initialize``, ``sample``, ``visualize``, ``example_batch``, ``evaluation_metric``,
``conditioner_parameters``, ``load_pretrained``) is :class:`TrainableModel`, the base of
:class:`FlowModel`. A model that is not a flow (the L1-trained RRDB super-resolution network of
:mod:`attnflow.models.rrdb`) derives from :class:`TrainableModel` alone: the loop needs no
per-family code, and no flow method is faked.

Template methods: the public methods here check their inputs once, then call the family's
``_log_prob``, ``_encode``, ``_decode``, ``_sample``, ``_prior_log_prob`` and (optionally)
``_objective_log_prob``. A family describes its inputs through :meth:`data_shape`,
:meth:`check_condition` and :meth:`latent_shapes`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core import initialize_data_dependent, no_logdet
from ..evaluation.likelihood import bits_per_dim

__all__ = ["TrainableModel", "FlowModel", "TASKS", "check_temperature", "check_count"]

TASKS = ("generation", "super_resolution", "translation")


def check_temperature(temperature: Any, where: str = "temperature") -> float:
    """A sampling temperature as a float; ``ValueError`` unless it is finite and >= 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be a number >= 0, got {temperature!r}") from err
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {temperature!r}")
    return value


def check_count(n: Any, where: str = "n") -> int:
    """A positive int count; ``ValueError`` otherwise (bools and floats such as 1.5 are refused)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{where} must be a positive int, got {n!r}")
    return n


class TrainableModel(nn.Module, ABC):
    """What the training loop, ``evaluate`` and the sampling commands need of a model.

    * ``objective(batch)``: the scalar loss (``forward(batch)`` is the same, for DDP);
      ``loss_name`` says what it is (``"bpd"`` for flows, ``"l1"`` for the RRDB network);
    * ``initialize(batch)``: data-dependent initialisation, once (default: none);
    * ``sample(n, cond, *, temperature)``: uint8 images (a deterministic model ignores the
      temperature and sets ``stochastic = False``);
    * ``evaluation_metric(batch) -> [B]``: the per-image value the loop evaluates on the test split,
      named ``metric_name``: ``"bpd"`` (lower is better) for flows, ``"psnr"`` (higher is better,
      ``metric_higher_is_better``) for the RRDB network;
    * ``conditioner_parameters()``: the parameters of the network that encodes the condition (the
      RRDB encoder of SRFlow), which ``train.freeze_conditioner_until`` freezes;
    * ``load_pretrained()``: load the pretrained weights the model's config names (the training
      loop calls it at the start of a fresh run, never on resume; default: nothing to load).

    Subclasses set ``task`` (class attribute), ``n_bins`` and ``image_shape`` (the training image
    shape ``(C, H, W)``).
    """

    task: ClassVar[str] = "generation"
    condition_name: ClassVar[str] = "condition"  # what a condition is, for messages ("LR image")
    loss_name: ClassVar[str] = "bpd"
    metric_name: ClassVar[str] = "bpd"
    metric_higher_is_better: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True
    n_bins: int
    image_shape: tuple[int, ...]
    #: recompute the steps' activations on the backward pass (:meth:`set_invertible_backprop`)
    invertible_backprop: bool = False

    @property
    def conditional(self) -> bool:
        """Whether the model needs a condition (every task but ``generation``)."""
        return self.task != "generation"

    # --- what a family describes -------------------------------------------------------------
    def data_shape(self, cond: Tensor | None) -> tuple[int, ...]:
        """Shape ``(C, H, W)`` of the images that go with ``cond`` (default: ``image_shape``)."""
        return tuple(self.image_shape)

    def check_condition(self, cond: Tensor | None, batch: int | None = None) -> Tensor | None:
        """Validate ``cond`` (``None`` for unconditional models); ``batch`` is the expected batch."""
        name = type(self).__name__
        if not self.conditional:
            if cond is not None:
                got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
                raise ValueError(f"{name}: this model is unconditional, got a condition {got}")
            return None
        if not isinstance(cond, Tensor) or cond.dim() != 4:
            got = tuple(cond.shape) if isinstance(cond, Tensor) else cond
            raise ValueError(f"{name}: this model is conditional and needs cond [B, C, H, W], got {got}")
        if batch is not None and cond.shape[0] != batch:
            raise ValueError(f"{name}: {cond.shape[0]} conditions for {batch} images")
        return cond

    # --- input checks (once, here) -------------------------------------------------------------
    def check_images(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Validate an image batch and its condition; returns them (cond checked)."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: images must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name}: expected images [B, C, H, W], got shape {tuple(x.shape)}")
        cond = self.check_condition(cond, x.shape[0])
        batch_differs = cond is not None and cond.shape[0] != x.shape[0]
        if batch_differs or tuple(x.shape[1:]) != tuple(self.data_shape(cond)):
            raise ValueError(f"{name}: {self._data_mismatch(x, cond)}")
        return x, cond

    def _data_mismatch(self, x: Tensor, cond: Tensor | None) -> str:
        """The message for images of the wrong shape (families may say more)."""
        return f"built for images {tuple(self.data_shape(cond))}, got {tuple(x.shape[1:])}"

    def unpack(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """``(x, cond)`` from a batch as the task's DataLoader yields it, as floats on the model's
        device and dtype: a tensor (generation) or an ``(x, cond)`` pair."""
        ref = next((t for t in self.parameters() if t.is_floating_point()), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else torch.device("cpu")
        if isinstance(batch, (list, tuple)):
            if len(batch) != 2:
                raise ValueError(
                    f"{type(self).__name__}: expected a batch (images, condition), got {len(batch)} items"
                )
            x, cond = batch
            return x.to(device=device, dtype=dtype), cond.to(device=device, dtype=dtype)
        if not isinstance(batch, Tensor):
            raise TypeError(f"{type(self).__name__}: expected a batch tensor or pair, got {type(batch).__name__}")
        return batch.to(device=device, dtype=dtype), None

    def num_dims(self, x: Tensor) -> int:
        """Dimensions of one image of the batch ``x``."""
        return int(math.prod(x.shape[1:]))

    # --- training and evaluation ----------------------------------------------------------------
    @abstractmethod
    def objective(self, batch: Any) -> Tensor:
        """The scalar loss training minimises (``loss_name``)."""

    def forward(self, batch: Any) -> Tensor:
        """:meth:`objective` (so DistributedDataParallel, which wraps ``forward``, works)."""
        return self.objective(batch)

    def initialize(self, batch: Any) -> None:
        """Data-dependent initialisation from one batch (default: none, the batch is only checked).
        Call once, before any DDP wrap."""
        self.check_images(*self.unpack(batch))

    @abstractmethod
    def sample(self, n: int, cond: Tensor | None = None, *, temperature: float = 1.0) -> Tensor:
        """``n`` images (uint8 ``[n, C, H, W]``) at ``temperature``."""

    @abstractmethod
    def evaluation_metric(self, batch: Any) -> Tensor:
        """The test metric ``metric_name`` of every image of ``batch`` (``[B]``)."""

    def conditioner_parameters(self) -> list[nn.Parameter]:
        """The parameters of the condition's encoder (default: none)."""
        return []

    def load_pretrained(self) -> list[str]:
        """Load the pretrained weights the config names (default: none); returns the sources."""
        return []
    def set_invertible_backprop(self, enabled: bool = True) -> TrainableModel:
        """Memory-saving backprop through inverses: only flows have inverses to recompute from."""
        if enabled:
            raise ValueError(
                f"train.invertible_backprop: {type(self).__name__} is not a flow (it has no inverse "
                f"to recompute its activations from); set it to false"
            )
        return self

    # --- helpers for training pictures and benchmarks ----------------------------------------
    def example_batch(self, batch: int, device: torch.device | str = "cpu") -> Any:
        """A random batch of the training shape, as the DataLoader would yield it (benchmarks)."""
        x = torch.randint(0, int(self.n_bins), (batch, *self.image_shape), device=device).float()
        return x

    def sample_conditions(self, batch: Any) -> Tensor | None:
        """The conditions of a batch (``None`` for unconditional models), for sample grids."""
        return self.unpack(batch)[1]

    def to_pixels(self, images: Tensor) -> Tensor:
        """Images on this model's ``n_bins`` grid (levels ``0..n_bins-1``) as 8-bit pictures: level
        ``k`` becomes the centre of its bin, ``floor((k + 0.5) * 256 / n_bins)`` (the identity for
        256 bins)."""
        n_bins = int(self.n_bins)
        if n_bins == 256:
            return images
        k = images.to(torch.int32)
        return torch.div((2 * k + 1) * 256, 2 * n_bins, rounding_mode="floor").clamp_(0, 255).to(torch.uint8)

    #: titles of the panels side by side in a :meth:`visualize` cell (None: one panel, untitled)
    panel_titles: tuple[str, ...] | None = None

    def visualize(self, cond: Tensor | None, samples: Tensor, targets: Tensor | None = None) -> Tensor:
        """What a training sample grid shows (uint8 ``[n, C, H, W']``): the samples as pictures;
        conditional families put the condition (and, where given, the true image) beside each
        sample, in the order of :attr:`panel_titles`."""
        return self.to_pixels(samples)


class FlowModel(TrainableModel):
    """Abstract base of every flow family (see the module docstring for the contract).

    Subclasses set ``task`` (class attribute), ``n_bins`` and ``image_shape`` (the training image
    shape ``(C, H, W)``), and implement the underscored hooks.
    """

    @abstractmethod
    def latent_shapes(self, batch: int, cond: Tensor | None = None) -> list[tuple[int, ...]]:
        """Shapes of :meth:`encode`'s latents for ``batch`` images (that go with ``cond``)."""

    # --- the hooks a family computes -----------------------------------------------------------
    @abstractmethod
    def _log_prob(self, x: Tensor, cond: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _encode(self, x: Tensor, cond: Tensor | None) -> tuple[list[Tensor], Tensor]: ...

    @abstractmethod
    def _decode(self, latents: list[Tensor], cond: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _sample(self, n: int, cond: Tensor | None, temperature: float) -> Tensor: ...

    @abstractmethod
    def _prior_log_prob(self, latents: list[Tensor], cond: Tensor | None) -> Tensor: ...

    def _objective_log_prob(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """The log-density training maximises (default: :meth:`_log_prob`)."""
        return self._log_prob(x, cond)

    def _check_latents(self, latents: Sequence[Tensor], cond: Tensor | None) -> tuple[list[Tensor], Tensor | None]:
        latents = list(latents)
        name = type(self).__name__
        if not latents or not all(isinstance(z, Tensor) for z in latents):
            raise ValueError(f"{name}: latents must be a non-empty list of tensors")
        batch = latents[-1].shape[0]
        cond = self.check_condition(cond, batch)
        expected = self.latent_shapes(batch, cond)
        got = [tuple(z.shape) for z in latents]
        if got != [tuple(s) for s in expected]:
            given = "" if cond is None else f" for {self.condition_name} {tuple(cond.shape)}"
            raise ValueError(f"{name}: latents{given} must have shapes {expected}, got {got}")
        return latents, cond

    # --- the public contract -------------------------------------------------------------------
    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """``log p(x | cond)`` in nats, shape ``[B]``."""
        x, cond = self.check_images(x, cond)
        return self._log_prob(x, cond)

    def objective_log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """The log-density (nats, ``[B]``) training maximises: ``log_prob`` for most families;
        Full-Glow's adds ``lambda * log p(cond)``."""
        x, cond = self.check_images(x, cond)
        return self._objective_log_prob(x, cond)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``x -> (latents, logdet)``: the split latents (finest first), the top latent last;
        ``logdet`` (``[B]``) includes the dequantisation log-det ``-D ln n_bins``."""
        x, cond = self.check_images(x, cond)
        return self._encode(x, cond)

    def decode(self, latents: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Exact inverse of :meth:`encode`: latents -> the (dequantised, continuous) image."""
        latents, cond = self._check_latents(latents, cond)
        with no_logdet():  # the flows' log-dets are not part of the result
            return self._decode(latents, cond)

    def prior_log_prob(self, latents: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Sum of the priors' log-densities of ``latents`` (``[B]``)."""
        latents, cond = self._check_latents(latents, cond)
        return self._prior_log_prob(latents, cond)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, temperature: float = 1.0) -> Tensor:
        """``n`` images (uint8 ``[n, C, H, W]``) at ``temperature``. A conditional model takes one
        condition per sample, or one condition (batch 1) shared by all ``n`` samples."""
        n = check_count(n, f"{type(self).__name__}.sample: n")
        temperature = check_temperature(temperature, f"{type(self).__name__}.sample: temperature")
        cond = self.check_condition(cond)
        if cond is not None and cond.shape[0] not in (1, n):
            b, what = cond.shape[0], self.condition_name
            raise ValueError(
                f"{type(self).__name__}.sample: give 1 or n={n} {what}s, got {b} (n must be {b} for "
                f"one sample per {what}, or give 1 {what} for n samples of it)"
            )
        with no_logdet():
            return self._sample(n, cond, temperature)

    def _bits(self, log_p: Tensor, x: Tensor) -> Tensor:
        # log_p includes the dequantisation log-det -D ln n_bins; bits_per_dim takes the unit-scale
        # density, which is log_p + D ln n_bins.
        d = self.num_dims(x)
        return bits_per_dim(log_p + d * math.log(self.n_bins), d, int(self.n_bins))

    def bits_per_dim(self, batch: Any) -> Tensor:
        """Bits/dim of every image of ``batch`` under ``log_prob`` (``[B]``)."""
        x, cond = self.check_images(*self.unpack(batch))
        return self._bits(self._log_prob(x, cond), x)

    def objective(self, batch: Any) -> Tensor:
        """The scalar loss training minimises: mean bits/dim of the training objective's log-density
        (``log_prob`` for most families; Full-Glow adds ``lambda * log p(cond)``)."""
        x, cond = self.check_images(*self.unpack(batch))
        return self._bits(self._objective_log_prob(x, cond), x).mean()

    def initialize(self, batch: Any) -> None:
        """Data-dependent initialisation (ActNorm) from one batch. Call once, before any DDP wrap."""
        x, cond = self.check_images(*self.unpack(batch))
        initialize_data_dependent(self, self._objective_log_prob, x, cond)

    def set_invertible_backprop(self, enabled: bool = True) -> FlowModel:
        """Training with memory that does not grow with depth (``train.invertible_backprop``).

        When enabled, every training forward (under autograd) runs the steps of flow of each level
        through :func:`attnflow.invertible_backprop.invertible_forward`: no activation of a step is stored; the
        backward pass reconstructs each layer's input from its output with the layer's inverse,
        re-runs it and backpropagates (parameters, inputs and conditions alike). The values are
        those of the ordinary path; the gradients differ by the inverse's rounding error (float32:
        about 2e-6 relative). Costs about one more forward and one inverse per step. Enable it after
        :meth:`initialize`. Returns the model.
        """
        self.invertible_backprop = bool(enabled)
        return self

    def _invertible_now(self) -> bool:
        return self.invertible_backprop and torch.is_grad_enabled()

    def evaluation_metric(self, batch: Any) -> Tensor:
        """Bits/dim of every image of ``batch`` (the flows' test metric)."""
        return self.bits_per_dim(batch)

    def conditioner_parameters(self) -> list[nn.Parameter]:
        conditioner = getattr(self, "conditioner", None)
        return [] if conditioner is None else list(conditioner.parameters())
