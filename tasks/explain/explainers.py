"""Explain files with a released variant: each modality's explainer and report (by the contract's kind), and which inputs."""

from __future__ import annotations

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


class ChosenInputs(BaseModel):
    """The inputs chosen to explain, in order: their names, why each was chosen, and the files that could not be read."""

    names: list[str]
    why: list[str]
    failed: list[FailedInput]


def choose_inputs(
    files: list[InputFile],
    backend: Backend,
    contract: InputContract,
    classes: list[str],
    count: int,
    seed: int = 0,
) -> tuple[ChosenInputs, np.ndarray]:
    """``count`` of the readable files, the least confident quarter first, then round-robin over classes; and their raw inputs.

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
    why = ["least confident" if i in least else f"predicted class {classes[int(probs[i].argmax())]}" for i in chosen]
    return ChosenInputs(names=[names[i] for i in chosen], why=why, failed=failed), np.asarray(decoded.raw)[chosen]


def explain_chosen(
    chosen: ChosenInputs,
    raw: np.ndarray,
    explainer: Explainer,
    start: int = 0,
    on_explained: Callable[[int, int, ExplainedInput], None] | None = None,
) -> list[ExplainedInput]:
    """Explain chosen inputs ``start`` on (``raw`` holds theirs); each explanation depends on its input alone, not on order."""
    items = []
    for offset, row in enumerate(raw):
        number = start + offset
        item = ExplainedInput(name=chosen.names[number], raw=row.tolist(), explanation=explainer.explain(row), why=chosen.why[number])
        items.append(item)
        if on_explained:
            on_explained(number + 1, len(chosen.names), item)
    return items
