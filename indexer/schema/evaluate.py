"""The typed answers of evaluation (`clip-gaze evaluate`) and of the hub correction (see `schema` for the
rules every answer shares)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .analysis import ModelInfo, RelativeInfo  # RelativeInfo: also an answer of analyze
from .fields import Answer
from .vocabularies import Vocabulary
from .collections import PictureInfo

TERM_PROBABILITY = ("A term's probability is the sum of the probabilities of its phrases (one per template) in the "
                    "softmax over every phrase of the vocabulary.")


class Interval(Answer):
    """A figure and its bootstrap 95 % interval (resampling pictures); null where it is not defined."""

    value: float | None
    low: float | None = None
    high: float | None = None


class ClassMetrics(Answer):
    term: str
    support: int = Field(description="Pictures labelled with the term")
    predicted: int = Field(description="Pictures whose best term it is")
    precision: float
    recall: float
    f1: float
    average_precision: float | None = Field(None, description="Multi-label sets: area under the precision-recall curve "
                                            "of the term's probability")


class Confusion(Answer):
    labels: list[str] = Field(description="Rows: the true terms")
    predicted: list[str] = Field(description="Columns: the same terms, then the terms that are no label but win most "
                                 "often, then every other term of the vocabulary together")
    matrix: list[list[int]]


class CalibrationBin(Answer):
    low: float
    high: float
    count: int
    confidence: float | None = Field(description="Mean probability of the best term in the bin")
    accuracy: float | None = Field(description="Share of the bin's pictures whose best term is right")


class Winner(Answer):
    term: str
    wins: int = Field(description="Pictures whose best term it is")
    share: float
    labelled: int = Field(description="Of those, how many carry the term as a label")


class Example(Answer):
    source: str
    external_id: str | None
    sha256: str
    probability: float = Field(description="The predicted term's probability")


class ConfusionPair(Answer):
    label: str
    term: str = Field(description="What the model preferred instead")
    count: int
    examples: list[Example]


class Metrics(Answer):
    pictures: int = Field(description="Pictures with at least one label in the vocabulary")
    top1: Interval = Field(description="Share of pictures whose best term is one of their labels")
    top5: Interval = Field(description="Share of pictures with one of their labels among their five best terms")
    balanced_accuracy: Interval = Field(description="Mean over the labelled terms of each term's recall")
    macro_f1: Interval = Field(description="Mean over the labelled terms of each term's F1 (best term as prediction)")
    mean_average_precision: Interval | None = Field(None, description="Multi-label sets: mean over terms of average precision")
    ece: Interval = Field(description="Expected calibration error of the best term's probability (10 equal bins)")
    rated_pairs: int = Field(0, description="(picture, term, rating) triples with the term in the vocabulary")
    spearman: Interval | None = Field(None, description="Spearman's correlation of ratings with the term's probability")
    per_class: list[ClassMetrics]
    confusion: Confusion | None = Field(None, description="Single-label sets")
    calibration: list[CalibrationBin]
    winners: list[Winner] = Field(description="The terms that win most often (a hub wins far more often than it is a label)")
    worst_confusions: list[ConfusionPair]


class RelativeMetrics(RelativeInfo):
    metrics: Metrics


class TopTerm(Answer):
    term: str
    phrase: str = Field(description="The term's most probable phrase")
    probability: float


class Prediction(Answer):
    source: str
    external_id: str | None
    sha256: str
    labels: list[str] = Field(description="Its labels that are terms of the vocabulary")
    term: str
    phrase: str
    probability: float
    correct: bool | None = Field(description="Null for a picture with ratings only")
    top: list[TopTerm] = Field(description="The five best terms")
    relative: TopTerm | None = Field(None, description="The best term after the correction (with --relative-to)")


class MissingLabel(Answer):
    label: str
    pictures: int = Field(description="Pictures carrying it")


class Bootstrap(Answer):
    resamples: int
    seed: int
    level: float = 0.95
    unit: str = "picture"


class Evaluation(Answer):
    ok: Literal[True] = True
    model: ModelInfo
    vocabulary: Vocabulary
    labels: str = Field(description="The labels file")
    kind: Literal["single-label", "multi-label", "ratings"]
    terms: int = Field(description="Distinct terms of the vocabulary")
    softmax_over: int = Field(description="How many phrases each softmax ran over")
    term_probability: str = TERM_PROBABILITY
    size: int = Field(description="Pictures the labels file names")
    evaluated: int = Field(description="Pictures read and scored")
    failed: int
    bootstrap: Bootstrap
    metrics: Metrics
    relative: RelativeMetrics | None = Field(None, description="The same figures after the hub correction")
    missing_labels: list[MissingLabel] = Field(description="Labels (and rated terms) that are not terms of the vocabulary")
    errors: list[PictureInfo] = Field(description="Pictures that could not be read, with their reasons")
    predictions: list[Prediction]
    report: list[str] | None = Field(None, description="Files written with --report")
    timing_ms: float
