"""Tensors on the wire: raw little-endian bytes in a declared dtype, dense or sparse CSR.

Everything read here comes from a client, so every length, index and shape is checked before
numpy touches it; a bad tensor is an InvalidInputError that names the field.
"""

from __future__ import annotations

import math

import numpy as np

from mint_rl.errors import InvalidInputError
from mint_rl.server import tinker_wire_pb2 as pb
from mint_rl.types import TensorData

# What a client may send. INT32 widens to int64 as the SDK does; float32/int64 are what it sends.
_READ: dict[int, tuple[type[np.generic], str]] = {
    pb.DTYPE_FLOAT32: (np.float32, "float32"),
    pb.DTYPE_INT64: (np.int64, "int64"),
    pb.DTYPE_INT32: (np.int32, "int64"),
}
_WRITE = {
    "float32": (pb.DTYPE_FLOAT32, np.dtype("<f4")),
    "int64": (pb.DTYPE_INT64, np.dtype("<i8")),
}

# A CSR tensor is densified: a tiny message must not ask for a huge dense array.
MAX_DENSE_ELEMENTS = 1 << 26


def read_array(field: str, raw: bytes, dtype: type[np.generic]) -> np.ndarray:
    """Bytes -> 1-D array (little-endian), refusing a byte count that is not whole elements."""
    item = np.dtype(dtype).newbyteorder("<")
    if len(raw) % item.itemsize:
        raise InvalidInputError(field, f"{len(raw)} bytes is not a whole number of "
                                       f"{item.name} values")
    return np.frombuffer(raw, dtype=item)


def decode_tensor(field: str, msg: pb.Tensor) -> TensorData:
    """A wire Tensor as mint_rl's TensorData (CSR tensors come out dense)."""
    if msg.dtype not in _READ:
        raise InvalidInputError(field, f"dtype {_dtype_name(msg.dtype)} is not supported "
                                       "(float32 or int64)")
    np_dtype, name = _READ[msg.dtype]
    shape = [int(s) for s in msg.shape]
    if any(s < 0 for s in shape):
        raise InvalidInputError(field, f"shape {shape} has a negative dimension")
    which = msg.WhichOneof("encoding")
    if which == "sparse_csr":
        array = _densify(field, msg.sparse_csr, np_dtype, shape)
    else:
        array = read_array(field, msg.dense, np_dtype)
        if shape and math.prod(shape) != array.size:
            raise InvalidInputError(field, f"shape {shape} does not hold {array.size} values")
        array = array.reshape(shape or [array.size])
    if name == "int64":
        array = array.astype(np.int64)
    return TensorData(data=array.reshape(-1).tolist(), dtype=name,  # type: ignore[arg-type]
                      shape=list(array.shape))


def _dtype_name(value: int) -> str:
    return pb.DType.Name(value) if value in pb.DType.values() else str(value)  # type: ignore[arg-type]


def _densify(field: str, csr: pb.SparseCsr, dtype: type[np.generic],
             shape: list[int]) -> np.ndarray:
    """CSR (row pointers, column indices, values) -> dense 2-D array, zeros elsewhere."""
    if len(shape) != 2:
        raise InvalidInputError(field, f"a sparse CSR tensor must be 2-D, got shape {shape}")
    rows, cols = shape
    if rows * cols > MAX_DENSE_ELEMENTS:
        raise InvalidInputError(field, f"shape {shape} is too large (at most "
                                       f"{MAX_DENSE_ELEMENTS} elements)")
    values = read_array(f"{field}.values", csr.values, dtype)
    crow = read_array(f"{field}.crow_indices", csr.crow_indices, np.int64)
    col = read_array(f"{field}.col_indices", csr.col_indices, np.int64)
    nnz = values.size
    if crow.size != rows + 1 or crow[0] != 0 or crow[-1] != nnz or np.any(np.diff(crow) < 0):
        raise InvalidInputError(f"{field}.crow_indices",
                                f"must be {rows + 1} non-decreasing offsets from 0 to {nnz}")
    if col.size != nnz or (nnz and (col.min() < 0 or col.max() >= cols)):
        raise InvalidInputError(f"{field}.col_indices",
                                f"must be {nnz} column indices in [0, {cols})")
    dense = np.zeros((rows, cols), dtype=dtype)
    row_of = np.repeat(np.arange(rows), np.diff(crow))
    dense[row_of, col] = values
    return dense


def encode_batched(field: str, arrays: list[np.ndarray], dtype: str) -> pb.BatchedTensor:
    """Per-datum arrays -> one BatchedTensor: data concatenated, N + 1 byte offsets, and the
    shape after the first dimension (the same for every datum)."""
    proto_dtype, np_dtype = _WRITE[dtype]
    parts = [np.ascontiguousarray(a, dtype=np_dtype) for a in arrays]
    trailing = {tuple(p.shape[1:]) for p in parts}
    if len(trailing) > 1:
        raise ValueError(f"{field}: datums disagree on the trailing shape {sorted(trailing)}")
    offsets = np.zeros(len(parts) + 1, dtype="<i8")
    offsets[1:] = np.cumsum([p.nbytes for p in parts])
    return pb.BatchedTensor(
        data=b"".join(p.tobytes() for p in parts), offsets=offsets.tobytes(), dtype=proto_dtype,
        trailing_shape=list(trailing.pop()) if trailing else [],
    )
