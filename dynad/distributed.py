"""One process or many: the Hugging Face accelerate `Accelerator` that places, shards and synchronises the work.

    dynad run ...                                             one process (CPU or one GPU), as before
    accelerate launch --num_processes 8 -m dynad run ...      8 processes, DDP over the GPUs of a node
    accelerate launch --num_machines 4 --machine_rank R --main_process_ip H ... -m dynad run ...   several nodes

Every process runs the same code; `accelerate launch` (or torchrun) sets the environment that makes the Accelerator
join the process group (NCCL on GPUs, gloo on CPUs). Training shards each global batch over the processes
(dynad/training.py); inference shards the test images (`shard`, `gather`); only the main process writes files.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedDataParallelKwargs, gather_object

from dynad.provenance import resolve_device


def accelerator(device: str = "auto", mixed_precision: str = "no", find_unused_parameters: bool = False) -> Accelerator:
    """An Accelerator for `device` ("auto", "cpu", "cuda", "cuda:N") and autocast `mixed_precision` ("no", "bf16",
    "fp16"; the CPU always runs float32, as before accelerate).

    accelerate keeps one process-wide state. A single process may switch device or precision between runs (the
    tests and the notebooks run several configs in one kernel), so that state is rebuilt then; inside a launched
    group the settings are fixed for the group and a change is an error.
    """
    cpu = resolve_device(device).type == "cpu"  # a GPU named outright and absent is an error there
    mixed_precision = "no" if cpu else mixed_precision
    if PartialState._shared_state:
        st = PartialState()
        if cpu:
            same = st.device.type == "cpu"
        else:
            same = st.device == torch.device(device) if device.startswith("cuda:") else st.device.type == "cuda"
        if AcceleratorState._shared_state:
            same = same and AcceleratorState().mixed_precision == mixed_precision
        if not same and st.num_processes == 1:
            AcceleratorState._reset_state(reset_partial_state=True)  # no process group to lose in one process
        elif not same:
            raise ValueError(
                f"this launched group runs on {st.device} with its mixed precision; a config asks for device "
                f"{device!r} and mixed precision {mixed_precision!r}: one group runs one setting"
            )
    if device.startswith("cuda:") and not PartialState._shared_state:
        torch.cuda.set_device(torch.device(device))  # a single process on one chosen GPU
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=kwargs)


def state() -> PartialState:
    """This process's place in the group (num_processes, process_index, is_main_process, device)."""
    # Without CUDA, accelerate joins a launched group only when asked for the CPU (gloo).
    return PartialState(cpu=not torch.cuda.is_available())


def shard(n: int, index: int | None = None, count: int | None = None) -> slice:
    """The contiguous share of `n` items of process `index` of `count` (default: this process); the first n % count
    processes take one more."""
    st = state() if index is None or count is None else None
    index = st.process_index if index is None else index
    count = st.num_processes if count is None else count
    lo = index * (n // count) + min(index, n % count)
    return slice(lo, lo + n // count + (index < n % count))


def gather(parts: Any) -> list[Any]:
    """Every process's `parts` (any picklable object), in process order, on every process."""
    if state().num_processes == 1:
        return [parts]
    return gather_object([parts])


def precision(cfg) -> str:
    """The autocast of an ExperimentConfig: "no", "bf16" or "fp16"."""
    if cfg.mixed_precision_dtype not in ("bf16", "fp16"):
        raise ValueError(f"mixed_precision_dtype must be 'bf16' or 'fp16', got {cfg.mixed_precision_dtype!r}")
    return cfg.mixed_precision_dtype if cfg.mixed_precision else "no"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX), where bf16 autocast pays."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def inference_precision(cfg, device: torch.device) -> str:
    """The autocast inference runs under on `device`: "bf16", "fp16" or "no".

    CUDA follows mixed_precision. The CPU runs float32 unless inference.cpu_bf16 is true, or "auto" with
    mixed_precision on a CPU with native bf16 (the paper presets: the precision they have on a GPU).
    """
    if device.type == "cuda":
        return precision(cfg)
    mode = cfg.inference.cpu_bf16
    if device.type == "cpu" and (mode is True or (mode == "auto" and cfg.mixed_precision and cpu_has_bf16())):
        return "bf16"
    return "no"


def autocast(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """Inference autocast ("bf16"/"fp16" on CUDA, "bf16" on the CPU; "no": float32). A fitted pipeline also runs
    alone (DynAD.load), without an Accelerator, so inference does not need one."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
