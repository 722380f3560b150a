"""Row, record and column payloads (KServe V1 `instances`, MLflow's four JSON forms and CSV) ->
a 2-D array plus the column names when the client gave them."""

from __future__ import annotations

import csv
import io
import math
from array import array
from itertools import chain
from typing import Any

import numpy as np

from .errors import BadRequest

Table = tuple[np.ndarray, list[str] | None]


def from_rows(rows: Any, where: str) -> Table:
    """A list of rows (lists of values), or a list of scalars (one feature per row)."""
    if not isinstance(rows, list) or not rows:
        raise BadRequest(f"{where} must be a non-empty list")
    if isinstance(rows[0], dict):
        return from_records(rows, where)
    if isinstance(rows[0], list):
        width = len(rows[0])
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise BadRequest(f"{where}[{i}] must be a list like the first row")
            if len(row) != width:
                raise BadRequest(f"{where}[{i}] has {len(row)} values, the first row has {width}")
        return _matrix(list(chain.from_iterable(rows)), (len(rows), width), where), None
    return _matrix(rows, (len(rows), 1), where), None


def from_records(records: Any, where: str) -> Table:
    """A list of {column: value} objects with the same keys."""
    if not isinstance(records, list) or not records:
        raise BadRequest(f"{where} must be a non-empty list of objects")
    if not all(isinstance(r, dict) for r in records):
        raise BadRequest(f"{where} must contain only objects")
    columns = list(records[0])
    if not columns:
        raise BadRequest(f"{where}[0] has no fields")
    for i, record in enumerate(records):
        if record.keys() != records[0].keys():
            raise BadRequest(f"{where}[{i}] has fields {sorted(record)}, the first has {sorted(columns)}")
    flat = [record[c] for record in records for c in columns]
    return _matrix(flat, (len(records), len(columns)), where), columns


def from_columns(columns: Any, where: str) -> Table:
    """A {column: [values...]} object (MLflow's columnar `inputs`/`instances`)."""
    if not isinstance(columns, dict) or not columns:
        raise BadRequest(f"{where} must be a non-empty object of columns")
    names = list(columns)
    values = [columns[n] if isinstance(columns[n], list) else [columns[n]] for n in names]
    length = len(values[0])
    for name, col in zip(names, values):
        if len(col) != length:
            raise BadRequest(f"{where}: column {name!r} has {len(col)} values, {names[0]!r} has {length}")
    if length == 0:
        raise BadRequest(f"{where} has no rows")
    flat = [col[i] for i in range(length) for col in values]
    return _matrix(flat, (length, len(names)), where), names


def from_split(split: Any, where: str) -> Table:
    """pandas' `orient="split"`: {"columns": [...], "data": [[...]], "index": [...]}."""
    if not isinstance(split, dict) or "data" not in split:
        raise BadRequest(f"{where} must be an object with data (and columns)")
    matrix, _ = from_rows(split["data"], f"{where}.data")
    columns = split.get("columns")
    if columns is None:
        return matrix, None
    if not isinstance(columns, list) or len(columns) != matrix.shape[1]:
        raise BadRequest(f"{where}.columns must list one name per value in a row ({matrix.shape[1]})")
    return matrix, [str(c) for c in columns]


def from_csv(body: bytes | str) -> Table:
    """CSV with a header row; an empty cell is a missing value (NaN), as pandas reads it.

    Streamed, row by row, from the body's bytes (decoded as it is read, never the whole text at
    once), numbers straight into a float64 buffer: decoding costs ~8 bytes per cell (a cell is
    at least 2 bytes of body) instead of a list of strings per row (38x the body, measured), and
    only a column of text falls back to Python objects."""
    stream = io.StringIO(body) if isinstance(body, str) else io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline="")
    reader = csv.reader(stream)
    numbers = array("d")
    cells: list | None = None  # set once a cell is not a number: the rest are kept as objects
    rows = 0
    try:
        header = next(reader)
        width = len(header)
        for row in reader:
            if not row:
                continue
            rows += 1
            if len(row) != width:
                raise BadRequest(f"CSV line {reader.line_num} has {len(row)} fields, the header has {width}")
            if cells is None:
                try:
                    numbers.extend([float(c) if c.strip() else math.nan for c in row])
                    continue
                except ValueError:
                    cells = numbers.tolist()
                    numbers = array("d")
            cells.extend(_csv_cell(c) for c in row)
    except StopIteration:
        raise BadRequest("CSV body cannot be read: it is empty") from None
    except csv.Error as exc:
        raise BadRequest(f"CSV body cannot be read: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("CSV body is not UTF-8 text") from None
    if not rows:
        raise BadRequest("CSV body has a header but no rows")
    columns = [h.strip() for h in header]
    if cells is None:
        return np.frombuffer(numbers, dtype=np.float64).reshape(rows, width), columns
    return _matrix(cells, (rows, width), "CSV body", allow_missing=True), columns


def _csv_cell(cell: str) -> Any:
    cell = cell.strip()
    if not cell:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return cell


def _matrix(flat: list, shape: tuple[int, int], where: str, allow_missing: bool = False) -> np.ndarray:
    """Numbers become float64 (the fast path sklearn wants); strings make an object array that
    the model's own preprocessing may accept or reject."""
    kinds = set(map(type, flat))
    if kinds <= {int, float, bool}:
        return np.array(flat, dtype=np.float64).reshape(shape)
    if type(None) in kinds and not allow_missing:
        index = flat.index(None)
        raise BadRequest(f"{where}: value {index // shape[1]},{index % shape[1]} is null")
    nested = kinds & {list, dict}
    if nested:
        raise BadRequest(f"{where}: values must be numbers or strings, not {'/'.join(t.__name__ for t in nested)}")
    if kinds <= {int, float, bool, type(None)}:
        return np.array([math.nan if v is None else v for v in flat], dtype=np.float64).reshape(shape)
    array = np.empty(len(flat), dtype=object)
    array[:] = [math.nan if v is None else v for v in flat]
    return array.reshape(shape)
