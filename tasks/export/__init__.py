"""Export stage: ONNX and OpenVINO exports with parity, the runtime back ends, variant measurement and the serving policy."""
