"""What a model costs to run: parameters, multiply–accumulates, latency, throughput, memory.

Every function takes the model and a batch it accepts (``model(batch)``): a
:class:`~medfusion.types.MultimodalBatch` for a
:class:`~medfusion.models.MultimodalClassifier`, or a plain tensor whose first dimension
is the batch for any other module. The caller's model is left as it was: forward
measurements run in eval mode and restore every module's ``training`` flag afterwards;
the training measurement trains a deep copy.

- Parameters (:func:`count_parameters`): total, trainable, and per part
  (``encoder/<modality>``, ``fusion``, ``head``).
- MACs (:func:`count_macs`): multiply–accumulates of one forward per sample, from
  :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2 / batch size). Counted:
  matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, so every ``nn.Linear`` and
  ``matmul``/``einsum``), convolutions (1-D/2-D/3-D, transposed, grouped) and
  scaled-dot-product attention (QKᵀ and AV). Added here because PyTorch's table misses
  them on CPU: the CPU SDPA kernel (``_scaled_dot_product_flash_attention_for_cpu``),
  the oneDNN LSTM layer (``mkldnn_rnn_layer``: input and recurrent matrix products per
  step) and the fused inference kernels of ``nn.TransformerEncoderLayer`` /
  ``nn.MultiheadAttention`` (which are only taken when no parameter needs a gradient,
  since the count runs with autograd recording on). Not counted: element-wise work
  (activations, residual additions, masking, softmax outside SDPA), normalisation
  (batch/group/layer norm), pooling, embedding look-ups, the gate arithmetic of
  recurrent cells, and work outside PyTorch operators (e.g. a tokenizer). Attention
  counts every padded position (a mask does not reduce the count), except in the
  nested-tensor path of a frozen ``nn.TransformerEncoder``, which skips padding and is
  counted as run.
- Latency (:func:`measure_latency`) and throughput (:func:`measure_throughput`): wall
  clock of ``model(batch)`` in eval mode under ``torch.no_grad``, after warm-up, at the
  current ``torch.get_num_threads()`` (recorded; set it before measuring).
- Peak memory (:func:`measure_peak_memory`): the PyTorch profiler with
  ``profile_memory=True`` records every allocation and free of the CPU tensor allocator
  as a signed byte count with a time stamp; walking them in time order gives the
  running total of bytes allocated since the forward began, and its maximum is the peak
  extra memory. This counts tensor storage (activations, outputs, workspace tensors the
  operators allocate through PyTorch), not the interpreter, the allocator's own
  overhead, or scratch memory a library (oneDNN, BLAS) allocates outside PyTorch.
- Training throughput (:func:`measure_training_throughput`): forward, loss, backward and
  an ``AdamW`` step per batch.

Sources: ``torch.utils.flop_counter`` (PyTorch), and the MAC convention of fvcore /
ptflops (one multiply–accumulate = two FLOPs).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from medfusion.models.classifier import MultimodalClassifier
from medfusion.types import FusionOutput, MultimodalBatch

#: Bytes in one MB (decimal megabyte) of the memory figures.
MB = 1_000_000

Batch = MultimodalBatch | Tensor
#: ``loss_fn(model, batch) -> scalar loss`` for :func:`measure_training_throughput`.
LossFn = Callable[[nn.Module, Batch], Tensor]

aten = torch.ops.aten


# --------------------------------------------------------------------------- helpers


def batch_size_of(batch: Batch) -> int:
    """Number of samples in ``batch``.

    Raises:
        ValueError: on a batch that is neither a MultimodalBatch nor a tensor, or an empty one.
    """
    if isinstance(batch, MultimodalBatch):
        size = batch.batch_size
    elif isinstance(batch, Tensor) and batch.dim() > 0:
        size = batch.shape[0]
    else:
        raise ValueError(f"cost: expected a MultimodalBatch or a tensor (B, ...), received {type(batch).__name__}")
    if size < 1:
        raise ValueError(f"cost: expected a batch of at least one sample, received batch size {size}")
    return int(size)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode; restore each module's own flag on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def _synchronize(batch: Batch) -> None:
    """Wait for queued GPU work, so wall-clock timings are complete (no-op on CPU)."""
    tensors = [batch] if isinstance(batch, Tensor) else list(batch.inputs.values())
    if tensors and tensors[0].is_cuda:
        torch.cuda.synchronize(tensors[0].device)


def _percentile(ordered: list[float], q: float) -> float:
    """``q``-th percentile of sorted values, linear between closest ranks (NumPy's default)."""
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _check_positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ValueError(f"cost: expected {name} >= {minimum}, received {value}")


# --------------------------------------------------------------------------- parameters


def _count(params: list[nn.Parameter]) -> dict[str, int]:
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def count_parameters(model: nn.Module) -> dict:
    """Parameter counts, in all and per part.

    Parts of a :class:`~medfusion.models.MultimodalClassifier` are ``encoder/<modality>``
    (sorted), ``fusion`` (with the featurizers of early fusion) and ``head`` (0 when the
    fusion makes the logits itself); of any other module, its direct children. A
    parameter shared by two parts counts in both parts but once in the totals; parameters
    held by the model itself, outside every part, are reported as ``other``.

    Returns:
        ``{"total": int, "trainable": int, "parts": {part: {"total": int, "trainable": int}}}``.
    """
    if isinstance(model, MultimodalClassifier):
        parts: dict[str, nn.Module | None] = {f"encoder/{m}": model.encoders[m] for m in sorted(model.encoders)}
        parts.update(fusion=model.fusion, head=model.head)
    else:
        parts = dict(model.named_children())
    counts = {name: _count([] if module is None else list(module.parameters())) for name, module in parts.items()}
    own = list(model.parameters(recurse=False))
    if own:
        counts["other"] = _count(own)
    return {**_count(list(model.parameters())), "parts": counts}


# --------------------------------------------------------------------------- MACs


def _sequence_lengths(x: Tensor) -> list[int]:
    """Tokens per sample of a (B, L, E) tensor, dense or nested."""
    if x.is_nested:
        return [t.shape[0] for t in x.unbind()]
    return [x.shape[1]] * x.shape[0]


def _sdpa_cpu_flops(query: Tensor, key: Tensor, value: Tensor, *args, out_val=None, **kwargs) -> int:
    """QKᵀ and AV of ``_scaled_dot_product_flash_attention_for_cpu``.

    Inputs: query (..., Lq, E), key (..., Lk, E), value (..., Lk, Ev).
    """
    batch = math.prod(query.shape[:-2])
    return 2 * batch * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _rnn_layer_flops(input: Tensor, weight0: Tensor, weight1: Tensor, *args, out_val=None, **kwargs) -> int:
    """One oneDNN RNN layer and direction: input (..., I) steps x (W_ih + W_hh) per step."""
    steps = math.prod(input.shape[:-1])
    return 2 * steps * (weight0.numel() + weight1.numel())


def _encoder_layer_flops(src: Tensor, embed_dim: int, num_heads: int, qkv_weight: Tensor, qkv_bias: Tensor,
                         proj_weight: Tensor, proj_bias: Tensor, *args, out_val=None, **kwargs) -> int:
    """Fused ``nn.TransformerEncoderLayer`` inference: QKV, attention, output projection, FFN."""
    ffn_weight_1 = args[7] if len(args) > 7 else kwargs["ffn_weight_1"]
    per_token = qkv_weight.numel() + proj_weight.numel() + 2 * ffn_weight_1.numel()
    return 2 * sum(length * per_token + 2 * length * length * embed_dim for length in _sequence_lengths(src))


def _native_mha_flops(query: Tensor, key: Tensor, value: Tensor, embed_dim: int, num_head: int, *args,
                      out_val=None, **kwargs) -> int:
    """Fused ``nn.MultiheadAttention`` inference: Q, K, V projections, attention, output projection."""
    macs = 0
    for lq, lk in zip(_sequence_lengths(query), _sequence_lengths(key), strict=True):
        macs += 2 * lq * embed_dim * embed_dim + 2 * lk * embed_dim * embed_dim + 2 * lq * lk * embed_dim
    return 2 * macs


def _raw(formula: Callable[..., int]) -> Callable[..., int]:
    formula._get_raw = True  # FlopCounterMode passes tensors, not shapes
    return formula


#: Formulas for CPU operators that PyTorch's flop table does not know.
EXTRA_FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _raw(_sdpa_cpu_flops),
    aten.mkldnn_rnn_layer: _raw(_rnn_layer_flops),
    aten._transformer_encoder_layer_fwd: _raw(_encoder_layer_flops),
    aten._native_multi_head_attention: _raw(_native_mha_flops),
}


def count_macs(model: nn.Module, batch: Batch) -> float:
    """Multiply–accumulate operations of one forward pass, per sample.

    Counted with :class:`~torch.utils.flop_counter.FlopCounterMode` as FLOPs / 2 / batch
    size (see the module docstring for which operators count). The forward runs once in
    eval mode with autograd recording on (no backward), so PyTorch takes the same
    composite path as in training, whose matrix products the counter sees.

    Args:
        model: module called as ``model(batch)``.
        batch: a batch the model accepts; (B, ...) tensor or MultimodalBatch.

    Returns:
        MACs per sample.

    Raises:
        ValueError: on an empty or unsupported batch.

    Examples::

        >>> count_macs(nn.Linear(10, 20), torch.zeros(4, 10))
        200.0
    """
    size = batch_size_of(batch)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with eval_mode(model), torch.enable_grad(), counter:
        model(batch)
    return counter.get_total_flops() / 2 / size


# --------------------------------------------------------------------------- time


def measure_latency(model: nn.Module, batch: Batch, repeats: int = 50, warmup: int = 5) -> dict:
    """Wall-clock time of one forward of ``batch``: percentiles over ``repeats`` runs.

    Eval mode, ``torch.no_grad``, after ``warmup`` untimed runs, at the current
    ``torch.get_num_threads()``.

    Returns:
        ``{"p50_ms", "p90_ms", "p99_ms", "mean_ms": float, "repeats", "batch_size",
        "threads": int}``; percentiles interpolate linearly between ranks.

    Raises:
        ValueError: when ``repeats < 1`` or ``warmup < 0``, or on a bad batch.
    """
    _check_positive("repeats", repeats)
    _check_positive("warmup", warmup, minimum=0)
    size = batch_size_of(batch)
    timings = []
    with eval_mode(model), torch.no_grad():
        for _ in range(warmup):
            model(batch)
        _synchronize(batch)
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            _synchronize(batch)
            timings.append(1000 * (time.perf_counter() - start))
    timings.sort()
    return {"p50_ms": _percentile(timings, 50), "p90_ms": _percentile(timings, 90),
            "p99_ms": _percentile(timings, 99), "mean_ms": statistics.fmean(timings),
            "repeats": repeats, "batch_size": size, "threads": torch.get_num_threads()}


def measure_throughput(model: nn.Module, batch: Batch, seconds: float = 2.0) -> float:
    """Inference samples per second: forwards of ``batch`` repeated for at least ``seconds``.

    Eval mode, ``torch.no_grad``, one untimed warm-up forward, at least one timed forward.

    Raises:
        ValueError: when ``seconds <= 0``, or on a bad batch.
    """
    if not seconds > 0:
        raise ValueError(f"cost: expected seconds > 0, received {seconds}")
    size = batch_size_of(batch)
    with eval_mode(model), torch.no_grad():
        model(batch)
        _synchronize(batch)
        runs, start = 0, time.perf_counter()
        while True:
            model(batch)
            _synchronize(batch)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    return runs * size / elapsed


def _default_loss(model: nn.Module, batch: Batch) -> Tensor:
    """The classifier's own training loss, else cross-entropy of the logits.

    Labels default to class 0 when the batch has none: their values do not change the cost.
    """
    size = batch_size_of(batch)
    labels = batch.labels if isinstance(batch, MultimodalBatch) else None
    if labels is None:
        device = batch.device if isinstance(batch, Tensor) else next(iter(batch.inputs.values())).device
        labels = torch.zeros(size, dtype=torch.long, device=device)
    if isinstance(model, MultimodalClassifier):
        return model.loss(replace(batch, labels=labels))[1]["total"]
    output = model(batch)
    logits = output.logits if isinstance(output, FusionOutput) else output
    return F.cross_entropy(logits, labels)


def measure_training_throughput(model: nn.Module, batch: Batch, steps: int = 10,
                                loss_fn: LossFn | None = None) -> float:
    """Training samples per second: forward, loss, backward and an AdamW step per batch.

    Trains a deep copy in training mode (the caller's model and the global random state
    are left as they were); one untimed warm-up step creates the optimizer state, then
    ``steps`` steps are timed.

    Args:
        model: module to copy and train.
        batch: a training batch.
        steps: timed optimisation steps.
        loss_fn: ``loss_fn(model, batch) -> scalar``; by default the classifier's
            :meth:`~medfusion.models.MultimodalClassifier.loss` total, or cross-entropy of
            the output logits for other modules.

    Raises:
        ValueError: when ``steps < 1``, the model has no trainable parameter, or on a bad batch.
    """
    _check_positive("steps", steps)
    size = batch_size_of(batch)
    loss_fn = loss_fn or _default_loss
    trainee = copy.deepcopy(model).train()
    params = [p for p in trainee.parameters() if p.requires_grad]
    if not params:
        raise ValueError("cost: the model has no trainable parameter to measure training on")
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(trainee, batch).backward()
        optimizer.step()

    with torch.random.fork_rng(devices=[]):
        step()
        _synchronize(batch)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(batch)
        elapsed = time.perf_counter() - start
    return steps * size / elapsed


# --------------------------------------------------------------------------- memory


def allocation_trace(run: Callable[[], object]) -> list[int]:
    """Signed bytes of every CPU tensor allocation (+) and free (−) during ``run()``, in time order.

    Read from the memory events of ``torch.profiler.profile(profile_memory=True)``.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())  # stable: same-time events keep record order
    return [e.nbytes() for e in events]


def measure_peak_memory(model: nn.Module, batch: Batch) -> dict:
    """Peak extra CPU memory of one forward of ``batch``, in MB (10⁶ bytes).

    Eval mode, ``torch.no_grad``, after one untimed warm-up forward (so one-off caches are
    not counted). The profiler's allocation events are summed in time order; the peak is
    the largest running total above the memory held before the forward (see the module
    docstring for what is and is not seen).

    Returns:
        ``{"peak_mb": float, "retained_mb": float (still held at the end, e.g. the output),
        "allocated_mb": float (sum of all allocations), "allocations": int, "batch_size": int}``.

    Raises:
        ValueError: when the batch is not on the CPU, or on a bad batch.
    """
    size = batch_size_of(batch)
    tensors = [batch] if isinstance(batch, Tensor) else list(batch.inputs.values())
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError(f"cost: peak memory is measured on the CPU; batch is on {tensors[0].device}")
    with eval_mode(model), torch.no_grad():
        model(batch)
        trace = allocation_trace(lambda: model(batch))
    running = peak = 0
    for nbytes in trace:
        running += nbytes
        peak = max(peak, running)
    return {"peak_mb": peak / MB, "retained_mb": running / MB,
            "allocated_mb": sum(b for b in trace if b > 0) / MB,
            "allocations": sum(1 for b in trace if b > 0), "batch_size": size}


# --------------------------------------------------------------------------- report


def cost_report(model: nn.Module, batch_1: Batch, batch_32: Batch, *, repeats: int = 50, warmup: int = 5,
                seconds: float = 2.0, steps: int = 10) -> dict:
    """Everything above in one JSON-ready dict of plain ints, floats and dicts.

    Args:
        model: the model to measure (left as it was).
        batch_1: a batch of one sample: MACs and latency.
        batch_32: a larger batch (32 samples): throughput, peak memory, training.
        repeats, warmup: of :func:`measure_latency`.
        seconds: of :func:`measure_throughput`.
        steps: of :func:`measure_training_throughput`.

    Returns:
        ``parameters`` (:func:`count_parameters`), ``macs_per_sample``,
        ``latency_b1_p50_ms``, ``latency_b1_p90_ms``, ``latency_b1_p99_ms``,
        ``throughput_b32`` (samples/s), ``peak_memory_mb`` (forward of ``batch_32``),
        ``train_samples_per_s`` (on ``batch_32``), ``threads``, ``batch_sizes`` ([b1, b32]).
    """
    latency = measure_latency(model, batch_1, repeats=repeats, warmup=warmup)
    return {
        "parameters": count_parameters(model),
        "macs_per_sample": float(count_macs(model, batch_1)),
        "latency_b1_p50_ms": float(latency["p50_ms"]),
        "latency_b1_p90_ms": float(latency["p90_ms"]),
        "latency_b1_p99_ms": float(latency["p99_ms"]),
        "throughput_b32": float(measure_throughput(model, batch_32, seconds=seconds)),
        "peak_memory_mb": float(measure_peak_memory(model, batch_32)["peak_mb"]),
        "train_samples_per_s": float(measure_training_throughput(model, batch_32, steps=steps)),
        "threads": int(torch.get_num_threads()),
        "batch_sizes": [batch_size_of(batch_1), batch_size_of(batch_32)],
    }
