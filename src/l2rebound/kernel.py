"""The fused CPU kernel (``_kernel.cc``) as JAX functions: the training loss and its gradient, the
network's outputs, and the genericity check of the jitter projection, for float64 and float32 work on the
CPU backend; and, on request (``use_threefry_lowering``), the Threefry hash of ``jax.random`` on the CPU.

On a CPU it does the same arithmetic as ``train.loss_and_grad`` and ``nets.forward``, faster
(``benchmarks/README.md``), because a block of samples stays in cache through every layer forward and
backward; the runs of one call are spread over XLA's CPU threads. Each dtype has its own compiled targets
(``TARGETS``: the float32 ones end in ``_f32``), chosen by θ's dtype at trace time; float32 computes and
accumulates in float32, as XLA's float32 programs do, on SIMD vectors of twice the lanes of float64's. It
is a drop-in for the training step only: it has no derivative rules, so anything that differentiates
(``theory``) uses the pure-JAX functions.

The kernel is compiled at its first use in a process (not at install, not at import), with the system's
C++ compiler, for this machine's CPU (``-march=native``), into a cache folder that later processes reuse
(``cache_dir``). Without a compiler, or if the build fails, one ``KernelUnavailableWarning`` says so and
everything runs through XLA alone. ``enabled(dtype)`` says whether it serves; it does not on accelerators,
for dtypes other than float64 and float32, when it could not be built, or with ``L2REBOUND_KERNEL=0`` in
the environment (read at the first use in a process). Importing this module changes nothing in JAX; only
``use_threefry_lowering`` does, when called.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

from l2rebound import nets

SOURCE = Path(__file__).with_name("_kernel.cc")
# -fwrapv and -DNDEBUG came with Python's own compiler flags when setuptools built the kernel; GCC compiles
# its inner loops into faster code with -fwrapv (benchmarks/README.md), and NDEBUG drops the FFI headers' asserts.
FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fwrapv", "-DNDEBUG")
LINK = ("-shared", "-fPIC")
TARGETS = {  # FFI target name: the handler's symbol in the compiled library
    "l2rebound_loss_grad": "LossGrad",
    "l2rebound_forward": "Forward",
    "l2rebound_violations": "Violations",
    "l2rebound_loss_grad_f32": "LossGradF32",
    "l2rebound_forward_f32": "ForwardF32",
    "l2rebound_violations_f32": "ViolationsF32",
    "l2rebound_threefry2x32": "Threefry",
}
SUFFIX = {np.dtype(np.float64): "", np.dtype(np.float32): "_f32"}  # the dtypes it serves: their targets' suffix
INSTALL_HINT = "install a C++17 compiler (g++ >= 9 or clang++ >= 10; Debian/Ubuntu: apt install g++) or set CXX to one"


class KernelUnavailableWarning(RuntimeWarning):
    """The fused kernel could not be built in this process: training runs through XLA alone (slower)."""


@functools.cache
def switched_off() -> bool:
    """True when ``L2REBOUND_KERNEL=0`` was in the environment at the first use in this process. Read once:
    the choice is compiled into the programs that JAX caches, so a later change could not take effect, and
    a result's manifest must name the path that really ran."""
    return os.environ.get("L2REBOUND_KERNEL", "1") == "0"


def cache_root() -> Path:
    """The package's cache folder: ``$L2REBOUND_CACHE``, else ``$XDG_CACHE_HOME/l2rebound`` (``~/.cache``
    when that is unset or empty)."""
    if os.environ.get("L2REBOUND_CACHE"):
        return Path(os.environ["L2REBOUND_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2rebound"


def cache_dir() -> Path:
    """Where built kernels are kept: ``cache_root() / "kernel"``."""
    return cache_root() / "kernel"


def find_compiler() -> list[str] | None:
    """The C++ compiler's command line: ``$CXX`` when set (which may carry options, e.g. ``ccache g++``), else
    ``c++`` or ``g++`` from ``PATH``; None when that program does not exist."""
    words = shlex.split(os.environ.get("CXX", ""))
    if words:
        found = shutil.which(words[0])
        return [found, *words[1:]] if found else None
    found = shutil.which("c++") or shutil.which("g++")
    return [found] if found else None


class _BuildError(Exception):
    """The compiler failed; args: its first error line, the path of its full log."""


def _ask(compiler: list[str], *args: str) -> str:
    """The compiler's standard output for ``args`` (empty input), or its error output when it fails."""
    done = subprocess.run([*compiler, *args], input="", capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else done.stderr


def library_name(compiler: list[str]) -> str:
    """File name of the kernel built by ``compiler``: a hash of everything that changes the binary (the
    source, the flags, the compiler's version, jaxlib's headers, the machine; and the compiler's predefined
    macros under these flags, which say what ``-march=native`` means on this CPU, so that a cache folder
    shared by different CPUs never hands one a library built for the other)."""
    key = hashlib.sha256(SOURCE.read_bytes())
    for part in (
        "\0".join(FLAGS + LINK),
        _ask(compiler, "--version"),
        _ask(compiler, *FLAGS, "-E", "-dM", "-x", "c++", "-"),
        jaxlib.__version__,
        platform.machine(),
    ):
        key.update(b"\0" + part.encode())
    return f"l2rebound_kernel-{key.hexdigest()[:24]}.so"


def _first_error(log: str) -> str:
    """The line of a compiler's output that says what went wrong first."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no output")


def build(compiler: list[str], folder: Path) -> Path:
    """The kernel as a shared library in ``folder``, compiled now unless a process built it before. The
    compiler writes to a temporary name in the same folder, renamed into place when complete, so processes
    building at once each get a whole library (the last rename wins; all are the same). Raises _BuildError."""
    target = folder / library_name(compiler)
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{target.stem}.", suffix=".so")
    os.close(fd)
    command = [*compiler, *FLAGS, *LINK, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", temp]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = folder / f"{target.stem}.log"
            log.write_text(shlex.join(command) + "\n" + done.stdout + done.stderr)
            raise _BuildError(_first_error(done.stderr + done.stdout), log)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return target


def _warn(what: str) -> None:
    message = f"l2rebound: {what}; training runs through XLA alone (slower). For the fused CPU kernel, {INSTALL_HINT}."
    warnings.warn(message, KernelUnavailableWarning, stacklevel=1)


def _load() -> ctypes.CDLL | None:
    """Build (or find in the cache) and load the kernel, and register its FFI targets; None, after one
    warning, when there is no compiler or the build fails."""
    compiler = find_compiler()
    if compiler is None:
        cxx = os.environ.get("CXX")
        _warn(f"no C++17 compiler found (CXX={cxx!r}: no such program)" if cxx else
              "no C++17 compiler found (CXX is unset and neither c++ nor g++ is on PATH)")
        return None
    try:
        library = ctypes.CDLL(str(build(compiler, cache_dir())))
    except _BuildError as error:
        first, log = error.args
        _warn(f"building the fused CPU kernel with {compiler[0]} failed ({first}; full log: {log})")
        return None
    except OSError as error:  # the cache folder is not writable or not executable, the compiler cannot run, ...
        _warn(f"building or loading the fused CPU kernel with {compiler[0]} failed ({error})")
        return None
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return library


_lock = threading.Lock()  # trace time can come from several threads (a background compile): build once
_loaded: dict[str, ctypes.CDLL | None] = {}  # "kernel": the library, or None, once the first use has tried


def _library() -> ctypes.CDLL | None:
    """``_load`` at the first call in this process; its answer ever after."""
    with _lock:
        if "kernel" not in _loaded:
            _loaded["kernel"] = None  # before building: a warning turned into an error (-W error) is not repeated
            _loaded["kernel"] = _load()
        return _loaded["kernel"]


def available() -> bool:
    """True when the kernel is switched on and built and loaded in this process (building it now, or
    loading it from the cache, at the first call)."""
    return not switched_off() and _library() is not None


def enabled(dtype) -> bool:
    """True when the kernel serves arrays of ``dtype`` here: float64 or float32, CPU backend, not switched
    off, and built (the first call that gets this far builds it). One decision for the loss and gradient,
    the outputs and the genericity check alike."""
    # canonicalised: float64 asked for outside a 64-bit scope is float32 to JAX, and its arrays are float32
    return (not switched_off() and jax.dtypes.canonicalize_dtype(dtype) in SUFFIX
            and jax.default_backend() == "cpu" and available())


def serves(theta, *arrays) -> bool:
    """True when the kernel computes for θ and ``arrays`` here: ``enabled`` for θ's dtype, and every array of
    that dtype (its targets take one dtype throughout; mixed dtypes are left to XLA's rules)."""
    return enabled(theta.dtype) and all(array.dtype == theta.dtype for array in arrays)


def fast_path(dtype) -> str:
    """What computes the training step for arrays of ``dtype`` here: ``"fused-kernel"`` or ``"xla"``."""
    return "fused-kernel" if enabled(dtype) else "xla"


def _ffi_call(target: str, dtype, out, **options):
    """``jax.ffi.ffi_call`` of the kernel's target ``target`` for arrays of ``dtype`` (its name with that
    dtype's suffix, one of ``TARGETS``), which its first use registers."""
    if not available():
        why = "L2REBOUND_KERNEL=0" if switched_off() else "see the KernelUnavailableWarning"
        raise RuntimeError(f"l2rebound: the fused kernel is not available in this process ({why})")
    if np.dtype(dtype) not in SUFFIX:
        raise TypeError(f"l2rebound: the fused kernel computes in float64 or float32, not {np.dtype(dtype)}")
    return jax.ffi.ffi_call(target + SUFFIX[np.dtype(dtype)], out, **options)


def _threefry2x32(k1, k2, x1, x2):
    """jax's ``threefry2x32`` primitive computed by the kernel: the four uint32 operands broadcast to one
    shape (as jax's own GPU rule does), two uint32 arrays of that shape out."""
    shape = jnp.broadcast_shapes(k1.shape, k2.shape, x1.shape, x2.shape)
    if 0 in shape:
        return [jnp.zeros(shape, jnp.uint32)] * 2
    out = jax.ShapeDtypeStruct(shape, jnp.uint32)
    operands = (jnp.broadcast_to(a, shape) for a in (k1, k2, x1, x2))
    # not _ffi_call: once jax's lowering, it must keep lowering even if the kernel is switched off later
    return jax.ffi.ffi_call("l2rebound_threefry2x32", (out, out))(*operands)


def use_threefry_lowering() -> bool:
    """Make the kernel's Threefry hash the CPU lowering of jax's ``threefry2x32`` primitive, for every
    program this process compiles from now on; True if it did, False (changing nothing) when the kernel is
    switched off or unavailable.

    Every CPU program that draws with ``jax.random`` (the default generator) then calls the kernel for the
    hash instead of inlining XLA's loop: the same bits, and programs that draw many numbers compile much
    faster. It is process-wide and cannot be undone, and ``jax.export`` refuses to serialise any such
    program (a custom call without compatibility guarantees), the user's own too. So only a program that
    owns its process (the command line) should call it."""
    if not available():
        return False
    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(_threefry2x32, multiple_results=True), platform="cpu")
    return True


def _dims(dims) -> np.ndarray:
    return np.asarray(dims, dtype=np.int64)


def _check(dims, theta, x, *more):
    """The kernel reads x (N, d0) and y (N, dL) by dims, in θ's dtype: refuse shapes that do not match them,
    and other dtypes (its targets take one dtype throughout)."""
    for array, width in ((x, dims[0]), *more):
        if array.ndim < 1 or array.shape[-1] != width:
            raise ValueError(f"kernel: an array of shape {array.shape} where dims {tuple(dims)} need (N, {width})")
        if array.dtype != theta.dtype:
            raise TypeError(f"kernel: an array of {array.dtype} with θ of {theta.dtype}; it takes one dtype")


def loss_and_grad(theta, dims: tuple[int, ...], x, y):
    """Mean squared error over samples and outputs and its gradient (P,) for θ (P,), inputs x (N, d0) and
    labels y (N, dL), all of one dtype: ``train.loss_and_grad`` computed by the kernel (float64 or float32,
    CPU only, where ``enabled``; vmap-able)."""
    theta, x, y = jnp.asarray(theta), jnp.asarray(x), jnp.asarray(y)
    _check(dims, theta, x, (y, dims[-1]))
    out = (jax.ShapeDtypeStruct(theta.shape[:-1], theta.dtype), jax.ShapeDtypeStruct(theta.shape, theta.dtype))
    call = _ffi_call("l2rebound_loss_grad", theta.dtype, out, vmap_method="broadcast_all")
    loss, grad = call(theta, x, y, dims=_dims(dims))
    return loss / y.size, grad / y.size


def forward(theta, dims: tuple[int, ...], x):
    """Network outputs (N, dL) for inputs x (N, d0): the kernel where it ``serves`` them, else ``nets.forward``
    (which promotes mixed dtypes). Data labels and the training step use
    this one, so that a student equal to its teacher reproduces the teacher's labels bit for bit (a zero
    residual) whichever code computes them."""
    theta, x = jnp.asarray(theta), jnp.asarray(x)
    if not serves(theta, x):
        return nets.forward(theta, dims, x)
    _check(dims, theta, x)
    out = jax.ShapeDtypeStruct(x.shape[:-1] + (dims[-1],), theta.dtype)
    call = _ffi_call("l2rebound_forward", theta.dtype, out, vmap_method="broadcast_all")
    return call(theta, x, dims=_dims(dims))


def violations(theta, dims: tuple[int, ...], rtol: float, ratio_bound: int):
    """``genericity.violations`` computed by the kernel (float64 or float32, CPU only, where ``enabled``;
    vmap-able): boolean mask (P,) of the entries of θ (P,) that violate C1-C3 with that tolerance and ratio
    bound. The same rule in plain IEEE arithmetic of θ's dtype; XLA compiles the ratio's division in
    ``violations`` into a multiplication by a reciprocal, so the two can differ for a ratio within a few ulps
    of the tolerance's edge."""
    theta = jnp.asarray(theta)
    out = jax.ShapeDtypeStruct(theta.shape, jnp.bool_)
    call = _ffi_call("l2rebound_violations", theta.dtype, out, vmap_method="broadcast_all")
    return call(theta, dims=_dims(dims), rtol=np.float64(rtol), ratio_bound=np.int64(ratio_bound))
