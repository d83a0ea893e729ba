"""Stages 3-4: fastText quality and toxicity classifiers (with a word list) and per-source scoring."""

from plasma_pipeline.classify.fasttext_model import load_model, predict_proba
from plasma_pipeline.classify.quality import QualityClassifierConfig, train_quality_classifier
from plasma_pipeline.classify.score import ScoreConfig, load_wordlist, score_shard, score_table
from plasma_pipeline.classify.toxicity import ToxicityClassifierConfig, build_wordlists, train_toxicity_classifier
from plasma_pipeline.classify.wordlist import Wordlist

__all__ = [
    "QualityClassifierConfig",
    "ScoreConfig",
    "ToxicityClassifierConfig",
    "Wordlist",
    "build_wordlists",
    "load_model",
    "load_wordlist",
    "predict_proba",
    "score_shard",
    "score_table",
    "train_quality_classifier",
    "train_toxicity_classifier",
]
