"""JSON <-> tensors for the REST predict API, following TF Serving's `util/json_tensor.cc`.

Requests come in row format (`{"instances": [...]}`: one item per example, an object
keyed by input name, or a bare value when the signature has one input) or columnar
format (`{"inputs": {...}}` or a bare value for one input). Each value is a dense,
naturally nested list; its shape is read from the first element at every level and
every other element must agree. Values are converted to the dtype the signature
declares, with the same checks and messages as TF Serving (ints where ints are
expected, no lossy float conversion, `{"b64": ...}` for binary strings).

Responses mirror the request format: `{"predictions": [...]}` (a list of objects, or
bare values when the signature has one output) or `{"outputs": ...}`. Floats are
written the way TF Serving writes them: shortest `%g` form that round-trips, a
trailing `.0` on whole numbers, and `NaN` / `Infinity` / `-Infinity` tokens. String
outputs are JSON strings, except outputs named `*_bytes`, written as `{"b64": ...}`.

References:
    tensorflow_serving/g3doc/api_rest.md; tensorflow_serving/util/json_tensor.cc.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.status import ServingError, invalid_argument

__all__ = ["COLUMNAR", "ROW", "dtype_name", "error_json", "parse_json_object",
           "predict_inputs_from_json", "predict_outputs_to_json", "signature_name"]

ROW, COLUMNAR = "row", "columnar"
_INT_RANGES = {types_pb2.DT_INT8: (-2**7, 2**7 - 1), types_pb2.DT_UINT8: (0, 2**8 - 1),
               types_pb2.DT_INT16: (-2**15, 2**15 - 1), types_pb2.DT_INT32: (-2**31, 2**31 - 1),
               types_pb2.DT_INT64: (-2**63, 2**63 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
               types_pb2.DT_UINT64: (0, 2**64 - 1)}
# dtype -> numpy type. Any JSON number converts, rounded (TF Serving's AddValueToTensor).
_FLOATS = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64}
_MAX_ECHO = 2000  # characters of a JSON value echoed back inside an error message


def dtype_name(dtype: int) -> str:
    """`DataTypeString`: DT_FLOAT -> "float", DT_STRING -> "string"."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:  # a number no DataType has
        return f"unknown dtype {dtype}"


def _numpy_dtype(dtype: int):
    if dtype == types_pb2.DT_STRING:
        return object
    if dtype in _FLOATS:
        return _FLOATS[dtype]
    if dtype == types_pb2.DT_BOOL:
        return np.bool_
    return np.dtype(dtype_name(dtype))


def _echo(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(f"JSON Value: {_echo(value)} Type: {_json_type(value)} "
                            f"is not of expected type: {dtype_name(dtype)}")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise invalid_argument(f"JSON Value: {_echo(value)} not formatted correctly for "
                               "base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _scalar(value: Any, dtype: int) -> Any:
    """`AddValueToTensor`: one JSON leaf converted to `dtype`, or an error."""
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return _decode_b64(value)
        raise _type_error(value, dtype)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in _FLOATS:
        if not is_number:
            raise _type_error(value, dtype)
        try:
            return float(value)  # rounded to the dtype, as RapidJSON's GetFloat / GetDouble
        except OverflowError:  # an integer literal beyond any double
            raise invalid_argument("JSON Parse error: Number too big to be stored in "
                                   "double.") from None
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {_echo(value)} to type: "
                                        f"{dtype_name(dtype)}")


def _dense_shape(value: Any) -> list[int]:
    """`GetDenseTensorShape`: the shape read off the first element at every level."""
    shape = []
    while isinstance(value, list):
        if len(shape) == MAX_NESTING:
            raise invalid_argument(f"JSON Value: {_echo(value)[:100]} is nested more than "
                                   f"{MAX_NESTING} levels deep: not a tensor")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _leaves(items: list, dtype: int) -> list | None:
    """The converted values of a list of leaves when every one is plainly of `dtype`'s JSON
    type (the common case, checked in bulk), else None: `_scalar` then checks each and
    raises TF Serving's error for the first bad one."""
    if dtype in _FLOATS:
        if all(type(v) is float or type(v) is int for v in items):
            try:
                return [float(v) for v in items]
            except OverflowError:
                return None
        return None
    if dtype == types_pb2.DT_STRING:
        if all(type(v) is str for v in items):
            return [v.encode("utf-8") for v in items]
        return None
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if all(type(v) is int and low <= v <= high for v in items):
            return items
        return None
    return None


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    """`FillTensorProto`: checks that `value` is dense with `shape`, appends its leaves."""
    rank = len(shape)
    if level == rank - 1 and isinstance(value, list) and len(value) == shape[level]:
        converted = _leaves(value, dtype)  # a whole innermost list at once
        if converted is not None:
            out.extend(converted)
            return
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(f"JSON Value: {_echo(value)} found at incorrect level: "
                                   f"{level + 1} in the JSON DOM. Expected at level: {rank}")
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} "
                               f"expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: "
                               f"{level} expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(value: Any, dtype: int) -> np.ndarray:
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    array = np.empty(len(flat), dtype=_numpy_dtype(dtype))
    with np.errstate(over="ignore"):  # 1e40 as float32 is inf, as TF Serving's GetFloat
        array[:] = flat
    return array.reshape(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# Python's json messages -> RapidJSON's `GetParseError_En` (what TF Serving answers).
_PARSE_ERRORS = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
)
_DECODER = json.JSONDecoder()
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
MAX_NESTING = 64  # deeper JSON arrays are refused (numpy's and any real tensor's limit)


def _parse_error(err: json.JSONDecodeError) -> str:
    for prefix, message in _PARSE_ERRORS:
        if err.msg.startswith(prefix):
            return message
    if err.msg.startswith("Expecting ',' delimiter"):
        opener = _innermost_open(err.doc, err.pos)
        return ("Missing a comma or '}' after an object member." if opener == "{"
                else "Missing a comma or ']' after an array element.")
    return "Unspecific syntax error."


def _innermost_open(text: str, pos: int) -> str:
    """The bracket (`{` or `[`) enclosing `pos`, skipping strings."""
    stack, in_string, escaped = [], False, False
    for char in text[:pos]:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "["


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (or key) of a parsed document holds a lone UTF-16 surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json_object(body: bytes) -> dict:
    """`ParseJson`: the request body as a JSON object, with RapidJSON's errors.

    As TF Serving parses (`kParseNanAndInfFlag | kParseStopWhenDoneFlag`): NaN and
    Infinity are accepted and anything after the first complete document is ignored.
    A lone UTF-16 surrogate escape (`"\\ud800"`) is refused as RapidJSON refuses it;
    bytes that are not UTF-8 are refused too (RapidJSON would pass them on unchecked).
    """
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: "
                               f"{err.start}") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        doc, _ = _DECODER.raw_decode(text, start)  # stops when the document is done
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {_parse_error(err)} at offset: "
                               f"{err.pos}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(doc):
        offset = _SURROGATE_ESCAPE.search(text).start()
        raise invalid_argument(f"JSON Parse error: The surrogate pair in string is invalid. "
                               f"at offset: {offset}")
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_echo(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    """`FillSignature`: the request's `signature_name` ("" when absent), a string."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_echo(doc)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
    return name


def _rows_fast(instances: list, dtypes: Mapping[str, int]) -> dict[str, np.ndarray] | None:
    """Every input converted as one column, when the instances are plain objects with
    exactly the signature's keys; None when anything is off (then `_rows_to_arrays`
    finds it row by row, with TF Serving's message naming the element)."""
    names = set(dtypes)
    if not all(type(e) is dict and e.keys() == names and "b64" not in e for e in instances):
        return None
    try:
        return {name: _to_array([e[name] for e in instances], dtype)
                for name, dtype in dtypes.items()}
    except ServingError:
        return None


def _rows_to_arrays(instances: list, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """`FillTensorMapFromInstancesList`: one tensor per input, batched over instances."""
    fast = _rows_fast(instances, dtypes)
    if fast is not None:
        return fast
    first = instances[0]
    if not isinstance(first, dict) and len(dtypes) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as "
                               "multiple input tensors required as per tensorinfo_map")
    as_objects = isinstance(first, dict) and not _is_b64(first)
    names = sorted(dtypes)
    items: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_b64(element)
        if as_objects and not is_object:
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        if not as_objects and is_object:
            raise invalid_argument(f"Expecting value/list but got object at item {index} of "
                                   "input list")
        pairs = element.items() if as_objects else [(names[0], element)]
        for name, value in pairs:
            try:
                if name not in dtypes:
                    raise invalid_argument(f"JSON object: does not have named input: {name}")
                array = _to_array(value, dtypes[name])
                seen = items.setdefault(name, [])
                if seen and seen[0].size != array.size:
                    raise invalid_argument(f"Expecting tensor size: {seen[0].size} but got: "
                                           f"{array.size}")
                if seen and seen[0].shape != array.shape:
                    raise invalid_argument(f"Expecting shape {_shape_text(seen[0].shape)} "
                                           f"but got: {_shape_text(array.shape)}")
                seen.append(array)
            except ServingError as err:
                key = f" key: {name}" if as_objects else ""
                raise invalid_argument(f"Failed to process element: {index}{key} of "
                                       f"'instances' list. Error: {err}") from None
        if as_objects and set(element) != set(names):
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. "
                                   f"JSON object: {_echo(element)} keys must be equal to: "
                                   f"{','.join(names)}")
    return {name: np.stack(arrays) for name, arrays in items.items()}


def _columns_to_arrays(inputs: Any, dtypes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """`FillTensorMapFromInputsMap`: one value for one input, else an object per input."""
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(dtypes) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        name = next(iter(dtypes))
        return {name: _to_array(inputs, dtypes[name])}
    arrays = {}
    for name in sorted(dtypes):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _to_array(inputs[name], dtypes[name])
    return arrays


def predict_inputs_from_json(doc: dict, dtypes: Mapping[str, int]
                             ) -> tuple[dict[str, np.ndarray], str]:
    """`FillPredictRequestFromJson` after the signature is known.

    Args:
        doc: the parsed request object.
        dtypes: the signature's inputs, name -> `DataType` enum.

    Returns:
        (input name -> array, `ROW` or `COLUMNAR`).
    """
    if not dtypes:
        raise invalid_argument("Failed to get input map for signature")
    try:
        return _inputs_from_json(doc, dtypes)
    except RecursionError:
        raise invalid_argument("JSON value is nested too deeply") from None


def _inputs_from_json(doc: dict, dtypes: Mapping[str, int]) -> tuple[dict[str, np.ndarray], str]:
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid_argument(f"JSON Value: {_echo(doc)} Not formatted correctly expecting "
                                   "only one of 'inputs' or 'instances' keys to exist ")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {_echo(doc)} Expecting 'instances' to be an "
                                   "list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {_echo(doc)} No values in 'instances' array")
        return _rows_to_arrays(instances, dtypes), ROW
    if "inputs" in doc:
        return _columns_to_arrays(doc["inputs"], dtypes), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _format_floats(flat: np.ndarray, np_type) -> list[str]:
    """`WriteDecimal` for every value: six significant digits (absl::StrCat, printf %g)
    when they round-trip to the same `np_type`, else max_digits10; a trailing `.0` on
    whole numbers; `NaN`, `Infinity`, `-Infinity`. Vectorised: one parse checks them all."""
    values = flat.astype(np_type)
    as_list = values.tolist()
    texts = [f"{v:g}" for v in as_list]
    finite = np.isfinite(values)
    with np.errstate(over="ignore"):
        parsed = np.array(texts, dtype=np.float64).astype(np_type)
    precise = ".9g" if np_type is np.float32 else ".17g"
    for i in np.flatnonzero(finite & (parsed != values)).tolist():
        texts[i] = format(as_list[i], precise)
    texts = [t + ".0" if "." not in t and "e" not in t else t for t in texts]
    for i in np.flatnonzero(~finite).tolist():
        v = as_list[i]
        texts[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
    return texts


def _leaf_strings(name: str, array: np.ndarray) -> list[str]:
    """Every element of `array` (flattened) as a JSON token."""
    flat = array.reshape(-1)
    kind = array.dtype
    if kind == object or kind.kind in "SU":
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist()]
        if name.endswith("_bytes"):
            return ['{"b64": ' + json.dumps(base64.b64encode(v).decode("ascii")) + "}"
                    for v in values]
        return [json.dumps(v.decode("utf-8", errors="replace"), ensure_ascii=False)
                for v in values]
    if kind == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if kind.kind in "iu":
        return [str(v) for v in flat.tolist()]
    if kind in (np.float16, np.float32, np.float64):
        return _format_floats(flat, np.float64 if kind == np.float64 else np.float32)
    raise invalid_argument(f"Failed to write JSON value for tensor type: {kind}")


def _nest(tokens: list[str], shape: tuple[int, ...], start: int) -> tuple[str, int]:
    if not shape:
        return tokens[start], start + 1
    if len(shape) == 1:
        end = start + shape[0]
        return "[" + ", ".join(tokens[start:end]) + "]", end
    parts = []
    for _ in range(shape[0]):
        text, start = _nest(tokens, shape[1:], start)
        parts.append(text)
    return "[" + ", ".join(parts) + "]", start


def _tensor_json(name: str, array: np.ndarray) -> str:
    return _nest(_leaf_strings(name, array), array.shape, 0)[0]


def predict_outputs_to_json(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """`MakeJsonFromTensors`: the response body for a request in format `fmt`."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return f'{{"outputs": {_tensor_json(names[0], outputs[names[0]])}}}'
        body = ", ".join(f"{json.dumps(n)}: {_tensor_json(n, outputs[n])}" for n in names)
        return f'{{"outputs": {{{body}}}}}'
    batch = None
    for name in names:
        shape = outputs[name].shape
        if not shape:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and shape[0] != batch:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                   f"{shape[0]} expecting: {batch}")
        batch = shape[0]
    rows = {}
    for n in names:  # format every value of an output at once, then cut it into rows
        tokens, inner = _leaf_strings(n, outputs[n]), outputs[n].shape[1:]
        size = int(np.prod(inner, dtype=np.int64))
        rows[n] = [_nest(tokens, inner, i * size)[0] for i in range(batch)]
    if len(names) == 1:
        items = rows[names[0]]
    else:
        items = ["{" + ", ".join(f"{json.dumps(n)}: {rows[n][i]}" for n in names) + "}"
                 for i in range(batch)]
    return f'{{"predictions": [{", ".join(items)}]}}'


def error_json(message: str) -> str:
    """`MakeJsonFromStatus`: `{"error": message}`."""
    return json.dumps({"error": message}, indent=4, ensure_ascii=False)
