"""The Open Inference Protocol (KServe V2, REST): request and response bodies, and tensors to and from JSON.

https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol — tensor
``data`` is row-major, flat or nested; an error body is ``{"error": "..."}``. The binary tensor
data extension (Triton's and KServe's) is supported both ways: with an ``Inference-Header-Content-Length``
header, the body is that many bytes of JSON followed by the raw tensors of inputs whose
``parameters.binary_data_size`` says how long each is; outputs asked for with ``binary_data: true`` (or
the request parameter ``binary_data_output: true``) come back the same way, little-endian, BYTES
elements each prefixed by its 4-byte length. Pure: no web framework.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.data.contract import InputContract
from tasks.export.backends import INPUT_NAME

# The header that splits a binary-extension body into its JSON part and its tensors.
BINARY_HEADER = "Inference-Header-Content-Length"

# The outputs every served model answers with, in this order.
OUTPUTS = ("logits", "probabilities", "class")
OUTPUT_DATATYPES = {"logits": "FP32", "probabilities": "FP32", "class": "BYTES"}


class ProtocolError(ValueError):
    """A request the protocol or the release's input contract does not allow; the message says what is allowed."""


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``: what the model takes and answers, from the release's input contract."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None  # validated by :func:`input_tensor`, not field by field: a batch is a million numbers


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


def model_metadata(
    name: str, version: str, runtime: str, contract: InputContract, classes: list[str], variant: str = "", variant_reason: str = ""
) -> ModelMetadata:
    """The metadata of a served release: its inputs, three outputs.

    Images: one FP32 input in the contract's layout. Tables: one input per schema column (BYTES
    for categories, FP64 otherwise); the prepared FP32 tensor ``input`` is accepted too, alone.
    ``parameters`` (the protocol's extension point) add the classes, the input contract, and the
    released variant this host serves with why it was chosen.
    """
    platform = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino_ir"}.get(runtime, runtime)
    prepared = TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, *contract.shape])
    if contract.kind == "tabular":
        inputs = [
            TensorMetadata(name=c.name, datatype="BYTES" if c.type == "categorical" else "FP64", shape=[-1])
            for c in contract.columns
        ]
    else:
        inputs = [prepared]
    return ModelMetadata(
        name=name,
        versions=[version],
        platform=platform,
        inputs=inputs,
        outputs=[
            TensorMetadata(name="logits", datatype="FP32", shape=[-1, len(classes)]),
            TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(classes)]),
            TensorMetadata(name="class", datatype="BYTES", shape=[-1]),
        ],
        parameters={
            "classes": classes, "input_contract": contract.model_dump(), "layout": contract.describe(),
            "variant": variant, "variant_reason": variant_reason,
            **({"prepared_input": prepared.model_dump()} if contract.kind == "tabular" else {}),
        },
    )


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body; all JSON without the binary extension's header.

    Raises:
        ProtocolError: a header length that is not a number or is longer than the body.
    """
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ProtocolError(f"{BINARY_HEADER} is {header_length!r}; it must be the JSON part's length, at most {len(body)}")
    return body[: int(header_length)], body[int(header_length) :]


def parse_infer_request(body: Any) -> InferRequest:
    """The request body as the protocol's shape; every problem named in one message.

    Raises:
        ProtocolError: not an inference request.
    """
    if not isinstance(body, dict):
        raise ProtocolError("the body must be a JSON object with an 'inputs' list (Open Inference Protocol)")
    try:
        return InferRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise ProtocolError(f"not an inference request: {problems}") from None


def input_tensor(request: InferRequest, contract: InputContract, max_rows: int, binary: bytes = b"") -> np.ndarray:
    """The one input tensor, checked against the contract: FP32, N x the contract's shape, 1 <= N <= ``max_rows``.

    ``binary`` is the binary part of the body, for an input sent with ``binary_data_size``.

    Raises:
        ProtocolError: another input name, datatype or shape, data that does not fill the shape, or non-numbers.
    """
    expected = list(contract.shape)
    if len(request.inputs) != 1:
        raise ProtocolError(f"{len(request.inputs)} inputs given; the model takes exactly one, {INPUT_NAME!r}")
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise ProtocolError(f"input {tensor.name!r} is unknown; the model's input is {INPUT_NAME!r}")
    if tensor.datatype != "FP32":
        raise ProtocolError(f"input {INPUT_NAME!r} has datatype {tensor.datatype}; the model takes FP32")
    if len(tensor.shape) != len(expected) + 1 or tensor.shape[1:] != expected:
        raise ProtocolError(f"input {INPUT_NAME!r} has shape {tensor.shape}; the model takes [N, {', '.join(map(str, expected))}]")
    rows = tensor.shape[0]
    if not 1 <= rows <= max_rows:
        raise ProtocolError(f"input {INPUT_NAME!r} has {rows} rows; between 1 and {max_rows} are allowed per request")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        expected_bytes = int(np.prod(tensor.shape)) * 4
        if tensor.data is not None:
            raise ProtocolError(f"input {INPUT_NAME!r} has both data and binary_data_size; send one")
        if size != expected_bytes or len(binary) != expected_bytes:
            raise ProtocolError(
                f"input {INPUT_NAME!r}: binary_data_size {size} and {len(binary)} binary bytes; shape {tensor.shape} "
                f"in FP32 takes {expected_bytes}"
            )
        values = np.frombuffer(binary, dtype="<f4")
    elif binary:
        raise ProtocolError(f"{len(binary)} binary bytes follow the JSON, but no input has parameters.binary_data_size")
    elif tensor.data is None:
        raise ProtocolError(f"input {INPUT_NAME!r} has no data (nor parameters.binary_data_size)")
    else:
        try:
            values = np.asarray(tensor.data, dtype=np.float32)
        except (TypeError, ValueError):
            raise ProtocolError(f"input {INPUT_NAME!r}: data must be numbers (flat or nested, row-major)") from None
    if values.size != int(np.prod(tensor.shape)):
        raise ProtocolError(f"input {INPUT_NAME!r}: {values.size} values do not fill shape {tensor.shape}")
    if not np.isfinite(values).all():
        raise ProtocolError(f"input {INPUT_NAME!r}: data holds NaN or infinite values")
    return values.reshape(tensor.shape)


def requested_outputs(request: InferRequest) -> dict[str, bool]:
    """The outputs to answer with (all, unless the request names some), each with whether it goes back binary.

    Raises:
        ProtocolError: an output the model does not have.
    """
    binary = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return {name: binary for name in OUTPUTS}
    unknown = [o.name for o in request.outputs if o.name not in OUTPUTS]
    if unknown:
        raise ProtocolError(f"outputs {unknown} are unknown; the model's outputs are {list(OUTPUTS)}")
    return {o.name: bool((o.parameters or {}).get("binary_data", binary)) for o in request.outputs}


def infer_response(
    name: str, version: str, request_id: str | None, outputs: dict[str, bool], logits: np.ndarray,
    probabilities: np.ndarray, classes: list[str],
) -> tuple[dict[str, Any], bytes]:
    """The response's JSON and its binary part: each requested output as a row-major tensor, in JSON or binary."""
    tensors = {
        "logits": logits.astype("<f4"),
        "probabilities": probabilities.astype("<f4"),
        "class": np.asarray([classes[i] for i in probabilities.argmax(axis=1)], dtype=object),
    }
    entries, blobs = [], []
    for output, binary in outputs.items():
        tensor = tensors[output]
        entry: dict[str, Any] = {"name": output, "datatype": OUTPUT_DATATYPES[output], "shape": list(tensor.shape)}
        if binary:
            blob = _bytes_tensor(tensor) if OUTPUT_DATATYPES[output] == "BYTES" else tensor.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        entries.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": entries}
    if request_id is not None:
        body["id"] = request_id
    return body, b"".join(blobs)


def _bytes_tensor(values: np.ndarray) -> bytes:
    """A BYTES tensor in the binary extension's layout: each element's 4-byte little-endian length, then its bytes."""
    parts = []
    for value in values.reshape(-1):
        encoded = str(value).encode()
        parts += [len(encoded).to_bytes(4, "little"), encoded]
    return b"".join(parts)
