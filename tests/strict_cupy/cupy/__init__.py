"""A strict stand-in for CuPy that runs on the CPU, for tests on machines without a GPU.

Put this folder first on PYTHONPATH and set MINIVQ_DEVICE=gpu: minivq.backend then "finds a
GPU" and every xp array is one of these. Like CuPy's, this ndarray
- refuses to become a NumPy array implicitly: np.asarray, np.testing and matplotlib raise
  "TypeError: Implicit conversion to a NumPy array is not allowed" (cupy.asnumpy, .get() and
  minivq.backend.to_numpy are the explicit ways out);
- refuses host NumPy arrays (ndim > 0) among the operands of its functions, operators and
  indexing (CuPy raises TypeError there too; as_strided on one gave "Cannot convert memoryview
  to cupy.cuda.memory.MemoryPointer").
Elsewhere it computes with NumPy underneath, so results equal the CPU backend's. It does not
model what a real GPU adds (atomics, memory, speed, CuPy's missing functions): a check passed
here still wants a run on a GPU. To run the whole suite against it:
    PYTHONPATH=tests/strict_cupy python -m pytest
"""
import operator
import types

import numpy as _np


class ndarray:
    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    def __array__(self, *a, **k):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        return _call(getattr(ufunc, method), inputs, kw, f"numpy ufunc {ufunc.__name__}")

    def __array_function__(self, func, types_, args, kwargs):
        return _call(func, args, kwargs, f"numpy.{func.__name__}")

    def __getattr__(self, name):
        if name.startswith("__"):  # e.g. __array_interface__: NumPy would read the data through it
            raise AttributeError(name)
        v = getattr(self._a, name)
        if callable(v):
            return lambda *args, **kw: _call(v, args, kw, f"ndarray.{name}")
        return _wrap(v)

    def __getitem__(self, key):
        return _call(operator.getitem, (self, key), {}, "indexing")

    def __setitem__(self, key, value):
        _check((key, value), "assignment")
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x) for x in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return operator.index(self._a)

    def __format__(self, spec):
        return format(self._a, spec)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def get(self):
        return self._a.copy()

    @property
    def T(self):
        return _wrap(self._a.T)


def _binary(op):
    def f(self, other):
        return _call(op, (self, other), {}, op.__name__)
    return f


def _reflected(op):
    def f(self, other):
        return _call(op, (other, self), {}, op.__name__)
    return f


def _inplace(op):
    def f(self, other):
        _check((other,), op.__name__)
        op(self._a, _unwrap(other))  # writes into self._a
        return self
    return f


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift"):
    _op = getattr(operator, _n + "_" if _n in ("and", "or") else _n)
    setattr(ndarray, f"__{_n}__", _binary(_op))
    setattr(ndarray, f"__r{_n}__", _reflected(_op))
    setattr(ndarray, f"__i{_n}__", _inplace(getattr(operator, "i" + _n if _n not in ("and", "or") else f"i{_n}")))
for _n in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(ndarray, f"__{_n}__", _binary(getattr(operator, _n)))
for _n in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_n}__", (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, _n)))
ndarray.__hash__ = None


def _check(args, where):
    for a in args:
        if isinstance(a, (list, tuple)):
            _check(a, where)
        elif isinstance(a, dict):
            _check(tuple(a.values()), where)
        elif isinstance(a, _np.ndarray) and a.ndim > 0:
            raise TypeError(f"strict cupy: a host NumPy array {a.shape} reached {where}")


def _unwrap(a):
    if isinstance(a, ndarray):
        return a._a
    if isinstance(a, tuple):
        return tuple(_unwrap(x) for x in a)
    if isinstance(a, list):
        return [_unwrap(x) for x in a]
    if isinstance(a, dict):
        return {k: _unwrap(v) for k, v in a.items()}
    return a


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray(r)
    if isinstance(r, _np.generic):  # CuPy returns 0-d arrays where NumPy returns scalars
        return ndarray(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, list):
        return [_wrap(x) for x in r]
    return r


def _call(f, args, kw, where):
    _check(args, where)
    _check(kw, where)
    return _wrap(f(*_unwrap(args), **_unwrap(kw)))


class _Module(types.ModuleType):
    def __init__(self, target, name):
        super().__init__(name)
        self._target = target

    def __getattr__(self, name):
        v = getattr(self._target, name)
        if isinstance(v, types.ModuleType):
            return _Module(v, f"{self.__name__}.{name}")
        if isinstance(v, _np.ufunc):
            return _Ufunc(v)
        if callable(v) and not isinstance(v, type):
            return lambda *args, **kw: _call(v, args, kw, f"{self.__name__}.{name}")
        return v


class _Ufunc:
    """cupy.add and friends: callable, with .at / .reduce / ... methods."""
    def __init__(self, uf):
        self._uf = uf

    def __call__(self, *args, **kw):
        return _call(self._uf, args, kw, f"cupy.{self._uf.__name__}")

    def __getattr__(self, name):
        if name == "at":  # in place: write into the wrapped array itself
            def at(a, idx, b=None):
                _check((idx, b), f"cupy.{self._uf.__name__}.at")
                self._uf.at(_unwrap(a), _unwrap(idx), *(() if b is None else (_unwrap(b),)))
            return at
        v = getattr(self._uf, name)
        return (lambda *args, **kw: _call(v, args, kw, f"cupy.{self._uf.__name__}.{name}")) if callable(v) else v


_numpy = _Module(_np, "cupy")


def asarray(a, dtype=None, **kw):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray(_np.array(a, dtype=dtype))


array = asarray


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else _np.asarray(a)


def __getattr__(name):
    return getattr(_numpy, name)


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                             Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)))
random = types.SimpleNamespace(seed=lambda s: None)
