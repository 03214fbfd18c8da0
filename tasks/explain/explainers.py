"""Explain files with a released variant: each modality's explainer and report (by the contract's kind), and which inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.explain.config import LimeConfig
from tasks.explain.explanation import ExplainedInput, Explainer, choose_samples, least_confident_count
from tasks.explain.inputs import NothingToExplain
from tasks.explain.lime_images import ImageLimeExplainer
from tasks.explain.lime_tables import TabularLimeExplainer
from tasks.explain.report import write_report as write_image_report
from tasks.explain.report_tables import write_report as write_table_report
from tasks.export.backends import Backend
from tasks.score.inference import probabilities
from tasks.score.inputs import FailedInput, InputFile

ReportWriter = Callable[[Path, str, str, list[ExplainedInput], list[str]], tuple[Path, Path]]


class Explaining(NamedTuple):
    """A modality's explainer over a variant, and the writer of its report (HTML, and the weights as JSON)."""

    explainer: Explainer
    write_report: ReportWriter


def explaining(contract: InputContract, predict_logits: Callable[[np.ndarray], np.ndarray], config: LimeConfig) -> Explaining:
    """The explainer and report of the contract's modality.

    Raises:
        ValueError: no explainer for that modality.
    """
    if contract.kind == "image":
        return Explaining(ImageLimeExplainer(predict_logits, contract, config), write_image_report)
    if contract.kind == "tabular":
        return Explaining(TabularLimeExplainer(predict_logits, contract, config), partial(write_table_report, contract=contract))
    raise ValueError(f"no explainer for {contract.kind} inputs; explainers exist for: image, tabular")


class ExplainedFiles(BaseModel):
    """The explained inputs, the files that could not be read, and the time per explanation."""

    items: list[ExplainedInput]
    failed: list[FailedInput]
    seconds_per_input: float


def explain_files(
    files: list[InputFile],
    backend: Backend,
    contract: InputContract,
    classes: list[str],
    count: int,
    explainer: Explainer,
    seed: int = 0,
    on_explained: Callable[[int, int, ExplainedInput], None] | None = None,
) -> ExplainedFiles:
    """Explain ``count`` of the readable files: the least confident quarter first, then round-robin over classes.

    Raises:
        NothingToExplain: no file could be read.
    """
    decoded = contract.read([f.path for f in files])
    failed = [FailedInput(name=files[index].name, reason=reason) for index, reason in decoded.failures]
    if not decoded.source:
        raise NothingToExplain(f"no readable input among {len(files)} files ({len(failed)} unreadable)")
    names = decoded.names if decoded.names is not None else [files[index].name for index in decoded.source]
    probs = probabilities(backend, contract, decoded.raw)
    chosen = choose_samples(probs, count, seed)
    least = set(chosen[: least_confident_count(len(chosen))])
    items: list[ExplainedInput] = []
    start = time.perf_counter()
    for number, index in enumerate(chosen, 1):
        why = "least confident" if index in least else f"predicted class {classes[int(probs[index].argmax())]}"
        item = ExplainedInput(
            name=names[index], raw=decoded.raw[index].tolist(), explanation=explainer.explain(decoded.raw[index]), why=why
        )
        items.append(item)
        if on_explained:
            on_explained(number, len(chosen), item)
    return ExplainedFiles(items=items, failed=failed, seconds_per_input=(time.perf_counter() - start) / len(chosen))
