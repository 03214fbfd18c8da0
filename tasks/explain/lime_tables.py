"""LIME explanations of table rows (the tabular modality's explainer), from the release alone.

``lime.lime_tabular.LimeTabularExplainer`` samples perturbed rows from training statistics: here
they come from the release's schema contract (quartile bins of each numeric column, counts of
each category, both of the train split), through lime's own ``training_data_stats`` path, so no
training data is needed at explain time. Categorical and boolean columns are perturbed as
categories; numeric ones within their quartile bins. A missing value, and a category the
release never saw, are categories of their own here, so perturbations can switch them on and off.
A numeric column missing in training has a bin of its own after its quartiles, so a missing
number is explained, and perturbed, as missing; lime's sampling from one-valued bins is fixed too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.data.table_schema import MISSING, NEW_CATEGORY, TabularColumn, TabularInput
from tasks.explain.config import LimeConfig
from tasks.explain.explanation import Explanation
from tasks.score.inference import softmax


def _levels(column: TabularColumn) -> list[str]:
    """A categorical or boolean column's values as LIME codes them: known ones, then missing, then new."""
    known = column.categories if column.type == "categorical" else ["false", "true"]
    return [*known, MISSING, NEW_CATEGORY]


def to_lime_rows(raw: np.ndarray, contract: TabularInput) -> np.ndarray:
    """Raw rows -> LIME's coding: a missing categorical/boolean value is code ``len(known)``, a new category the next."""
    rows = np.array(raw, dtype=np.float64, copy=True, ndmin=2)
    for j, column in enumerate(contract.columns):
        if column.type == "numeric":
            continue
        known = len(_levels(column)) - 2
        values = rows[:, j]
        rows[:, j] = np.where(np.isnan(values), known, np.where(values < 0, known + 1, values))
    return rows


def from_lime_rows(rows: np.ndarray, contract: TabularInput) -> np.ndarray:
    """LIME's coding -> raw rows (the inverse of :func:`to_lime_rows`)."""
    raw = np.array(rows, dtype=np.float64, copy=True)
    for j, column in enumerate(contract.columns):
        if column.type == "numeric":
            continue
        known = len(_levels(column)) - 2
        values = np.rint(raw[:, j])
        raw[:, j] = np.where(values == known, np.nan, np.where(values == known + 1, -1.0, values))
    return raw


def training_statistics(contract: TabularInput) -> dict[str, dict[int, list[float]]]:
    """lime's ``training_data_stats`` from the contract: bins of numeric columns, frequencies of the others."""
    stats: dict[str, dict[int, list[float]]] = {k: {} for k in ("means", "stds", "mins", "maxs", "bins", "feature_values", "feature_frequencies")}
    for j, column in enumerate(contract.columns):
        if column.type == "numeric":
            bins = column.bins
            if bins is None:  # no finite train value: one bin around the mean the model imputes
                edges, counts, means, stds = [column.mean], [1, 0], [column.mean, column.mean], [1e-11, 1e-11]
                mins, maxs = [column.mean, column.mean], [column.mean, column.mean]
            else:
                edges, counts, means, stds, mins, maxs = bins.edges, bins.counts, bins.means, bins.stds, bins.mins, bins.maxs
            stats["bins"][j], stats["means"][j], stats["stds"][j] = edges, means, stds
            stats["mins"][j], stats["maxs"][j] = mins, maxs
            # Floats, not ints: lime copies the explained row's own value into the drawn column, and a
            # missing number (NaN, which the model reads as missing) does not fit an int array. One more
            # bin, after the quartiles, is "missing" for a column that was missing in training.
            frequencies = [float(c) for c in counts] + ([_missing_count(column, sum(counts))] if column.nullable else [])
            stats["feature_values"][j] = [float(k) for k in range(len(frequencies))]
            stats["feature_frequencies"][j] = _drawable(frequencies)
            if column.nullable:
                for key, filler in (("means", 0.0), ("stds", 1.0), ("mins", 0.0), ("maxs", 0.0)):
                    stats[key][j] = [*stats[key][j], filler]  # never used: the missing bin undiscretizes to NaN
            continue
        counts = [float(c) for c in column.value_counts] or [0.0] * (len(_levels(column)) - 2)
        stats["feature_values"][j] = [float(k) for k in range(len(counts) + 2)]
        # A new category never occurred in training.
        stats["feature_frequencies"][j] = _drawable([*counts, _missing_count(column, sum(counts)), 0.0])
    return stats


def _missing_count(column: TabularColumn, present: float) -> float:
    """How many train rows missed ``column``, from its missing share and the count of those that did not."""
    share = column.missing_share
    return present * share / (1.0 - share) if share < 1 else 1.0


def _drawable(frequencies: list[float]) -> list[float]:
    """Frequencies lime can draw from: all equal where none was counted (a column seen only outside training)."""
    return frequencies if sum(frequencies) > 0 else [1.0] * len(frequencies)


def _missing_bin(discretizer, feature: int, edges: list[float], name: str) -> None:  # noqa: ANN001 - lime's discretizer
    """Give a numeric column the bin after its quartiles for a missing value: NaN falls in it, and comes back from it."""
    missing = len(edges) + 1
    quartiles = np.asarray(edges, dtype=np.float64)
    discretizer.lambdas[feature] = lambda x: np.where(np.isnan(x), missing, np.searchsorted(quartiles, x))
    discretizer.names[feature] = [*discretizer.names[feature][:missing], f"{name} is missing"]


def _undiscretize(discretizer, missing_bins: dict[int, int]):  # noqa: ANN001, ANN202
    """lime's ``get_undiscretize_values`` that draws NaN from a missing bin and a bin's one value from a one-valued bin.

    lime's own returns the z-score 0 for a bin whose smallest and largest values are equal (a
    column with many equal values), not that value; and it knows no missing bin.
    """
    from scipy.stats import truncnorm

    def values_of(feature: int, bins: np.ndarray) -> np.ndarray:
        bins = np.asarray(bins, dtype=np.int64)
        out = np.full(len(bins), np.nan)
        drawn = bins != missing_bins.get(feature, -1)
        idx = bins[drawn]
        mins, maxs = np.asarray(discretizer.mins[feature])[idx], np.asarray(discretizer.maxs[feature])[idx]
        means, stds = np.asarray(discretizer.means[feature])[idx], np.asarray(discretizer.stds[feature])[idx]
        values = mins.astype(np.float64).copy()
        spread = mins != maxs
        if spread.any():
            values[spread] = truncnorm.rvs(
                (mins[spread] - means[spread]) / stds[spread], (maxs[spread] - means[spread]) / stds[spread],
                loc=means[spread], scale=stds[spread], random_state=discretizer.random_state,
            )
        out[drawn] = values
        return out

    return values_of


class TabularLimeExplainer:
    """``lime_tabular`` over a runtime's batched predict, seeded, with the release's training statistics."""

    def __init__(self, predict_logits: Callable[[np.ndarray], np.ndarray], contract: TabularInput, config: LimeConfig) -> None:
        from lime.lime_tabular import LimeTabularExplainer

        self.config = config
        self.contract = contract
        categorical = [j for j, c in enumerate(contract.columns) if c.type != "numeric"]
        self._lime = LimeTabularExplainer(
            # lime fits a scaler and sizes its discretizer on this; with training_data_stats it reads
            # every statistic from them, so a placeholder of the right width stands in for the data.
            np.zeros((2, len(contract.columns))),
            mode="classification",
            feature_names=[c.name for c in contract.columns],
            categorical_features=categorical,
            categorical_names={j: _levels(contract.columns[j]) for j in categorical},
            discretize_continuous=True,
            training_data_stats=training_statistics(contract),
            random_state=config.seed,
        )
        discretizer = self._lime.discretizer
        missing_bins = {}
        for j, column in enumerate(contract.columns):
            if column.type == "numeric" and column.nullable:
                edges = column.bins.edges if column.bins else [column.mean]
                _missing_bin(discretizer, j, edges, column.name)
                missing_bins[j] = len(edges) + 1
        discretizer.get_undiscretize_values = _undiscretize(discretizer, missing_bins)
        self._predict_logits = predict_logits

    def probabilities(self, lime_rows: np.ndarray) -> np.ndarray:
        """Class probabilities of rows in LIME's coding, computed as every path computes them."""
        raw = from_lime_rows(lime_rows, self.contract)
        return softmax(self._predict_logits(np.ascontiguousarray(self.contract.to_model_input(raw))))

    def explain(self, item: np.ndarray) -> Explanation:
        """Explain one raw row (the contract's raw encoding)."""
        calls = 0

        def counted(rows: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            return self.probabilities(rows)

        row = to_lime_rows(item, self.contract)[0]
        # lime draws from numpy's global generator besides its own random state: seed both, for each row, so an
        # explanation depends on its row alone (not on which rows came before it, in this process or another).
        np.random.seed(self.config.seed)
        # In place: the discretizer and lime's base share this one RandomState.
        self._lime.random_state.seed(self.config.seed)
        result = self._lime.explain_instance(
            row,
            counted,
            top_labels=self.config.top_labels,
            num_features=len(self.contract.columns),
            num_samples=self.config.num_samples,
        )
        probabilities = self.probabilities(row[None])[0]
        names = list(result.domain_mapper.discretized_feature_names or result.domain_mapper.feature_names)
        for j, column in enumerate(self.contract.columns):
            if column.type == "numeric" and np.isnan(item[j]):
                names[j] = f"{column.name} is missing"  # a column never missing in training: in its top bin for lime
        return Explanation(
            probabilities=probabilities.tolist(),
            labels=[int(label) for label in result.top_labels],
            weights={int(k): {int(f): float(w) for f, w in v} for k, v in result.local_exp.items()},
            intercepts={int(k): float(v) for k, v in result.intercept.items()},
            features=names,
            model_calls=calls,
        )
