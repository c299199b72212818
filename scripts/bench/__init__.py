"""Time and memory of one SNN training step: spikelight, a plain-PyTorch reference, and peers.

    python scripts/benchmark.py                           # the three SHD-sized cases (minutes)
    python scripts/benchmark.py --case shd_recurrent      # one case
    python scripts/benchmark.py --scaling                 # cost against T and batch size
    python scripts/benchmark.py --rate-sweep              # cost against the hidden firing rate
    python scripts/benchmark.py --neuron-loops            # each neuron: fused vs autograd loop
    python scripts/benchmark.py --augment                 # event augmentation per batch
    python scripts/benchmark.py --all --markdown --json bench.json   # everything, as in docs/
    python scripts/benchmark.py --device cuda             # on a GPU, + the open-neuromorphic cases

One *step* is a full training step of the SHD-sized classifier: forward over ``T`` time steps,
max-over-time cross-entropy, backward, ``zero_grad`` (no optimiser update: it costs the same for
every implementation). The network is 700 inputs (about 2% of the ``[T, B, 700]`` bins active,
seeded) -> 256 current-based LIF neurons (recurrent or feed-forward) -> 20-unit leaky-integrator
readout; dt 1 ms, tau_mem 10 ms, tau_syn 5 ms, SuperSpike beta 100, as ``experiment=shd``;
initial weights scaled for a hidden firing rate of about 4-5 % per step. The ``on_*`` cases
(run by default on a GPU) are the open-neuromorphic library benchmark's sizes in the same step:
Linear n -> n + n LIF neurons (feed-forward), batch 16, T = 500, n = 4k, 8k, 16k.

Implementations (rows), all in one process on the same input tensor and the same initial weights:

- ``spikelight``: :class:`spikelight.network.SpikingNetwork` through its public constructor with
  its defaults; ``spikelight (autograd loop)`` with ``time_loop="autograd"``;
  ``spikelight (PyTorch loops)`` the default with the fused layer's C loops switched off
  (``spikelight.neurons.native.set_enabled(False)`` around the forward pass); ``spikelight
  (dense input)`` the default with the input product always one dense BLAS call instead of
  per-event sums (the other side of ``spikelight.neurons.events.SPARSE_DENSITY``); ``spikelight
  (compiled)`` the default in ``torch.compile`` (``spikelight_rows.py``); on a GPU the default
  runs the Triton kernels where triton imports, the PyTorch-loops row the dense loops;
- ``reference``: the same equations written as a straightforward PyTorch loop
  (``reference.py``). Before timing, loss and every weight gradient of each spikelight row are
  checked against it, asserted in float64 and reported for the timed float32 rows
  (``checks.py``; a mismatch stops the run), so the rows compute the same thing;
- ``snnTorch``, ``Norse`` (eager, and ``Norse (compiled)``: its cells in ``torch.compile``) and
  ``SpikingJelly`` (CuPy backend on a GPU where cupy imports) when installed (optional;
  ``pip install --no-deps``, see docs/benchmarks.md): their own LIF modules at the same sizes
  (``peers.py``). Their equations differ in normalisation details, so they are not checked for
  agreement. A peer whose first step fails is reported as not run.

Timing (``measure.py``): ``--warmup`` steps each, then ``--repeats`` rounds; each round times one
step of every implementation (round-robin, rotating the order), so machine noise hits all rows
alike. Reported: median and interquartile range in ms, ratio to the reference and to the fastest
peer.

Memory, two measures (``measure.py``):

- ``saved``: bytes of the distinct storages autograd saves for backward during the forward
  (``torch.autograd.graph.saved_tensors_hooks``), excluding the weights and the input: the
  activation memory that grows with ``T * B``. Deterministic. Tensors a custom autograd Function
  keeps as plain ``ctx`` attributes instead of ``save_for_backward`` are not seen.
- ``peak``: growth of memory during one training step over what was in use before it. On CPU,
  measured in a fresh subprocess per implementation (``scripts/benchmark.py --_child``): peak
  resident set (``VmHWM`` reset through ``/proc/self/clear_refs``) minus resident set before the
  step, with glibc's mmap threshold fixed at 16 KiB so freed buffers go back to the OS. On CUDA:
  ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the step.

Firing-rate sweep (``--rate-sweep``, ``rates.py``): the recurrent and the feed-forward case with
the input weights scaled so that spikelight's hidden layer fires at each ``--rates`` target
(percent of neuron-steps; the scale is found by bisection on forward passes of the seeded input),
every row given the same scaled weights; step time per row and the ratios, no memory.

Neuron loops (``--neuron-loops``, ``neuron_loops.py``): issue 15's network (700 inputs -> two
recurrent layers of 64 and 32 neurons of one kind -> 20-unit leaky readout; T=100, batch 32
unless ``--T``/``--batch``) for each neuron kind (IF, LIF, ALIF, adLIF symplectic and Euler, RF),
built with ``time_loop="fused"`` and ``"autograd"`` from one set of parameters; loss, logits and
gradients asserted equal in float64 first, then one float32 training step of each timed round
robin. Reported: both medians, their ratio, and the hidden firing rates; the target "adLIF's fused
step >= 3x its autograd loop" at those sizes.

Augmentation (``--augment``, ``augment.py``): each transform of ``conf/data/augment/shd.yaml``,
the recipe's ``order``, CutMix + mixup and all nine on an SHD-sized batch (B=256, T=100, 700
inputs, 2 % of the bins active, seeded), from the stored events as the SHD data module calls it
and from a dense batch; not a training step, no network.

Adding a row: decorate a builder ``setup -> Bench`` with :func:`bench.registry.register` in one
of the row modules; ``Bench.step()`` is what gets timed. A spikelight variant takes a few lines::

    @register("spikelight (compiled)", group="spikelight", check=True)
    def build_spikelight_compiled(setup):
        return spikelight_bench(setup, wrap=torch.compile)
"""

import sys


def log(message: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)
