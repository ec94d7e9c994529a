"""ComputeVocabularies: training-impression counts, min_count -> OOV, deterministic order."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam.vocabulary import ComputeVocabularies, order_vocabulary
from tfddn.spec import Feature


def _example(impressions, **features):
    return {"impressions": impressions, "features": features}


def test_min_count_leaves_rare_values_to_oov():
    features = [Feature("ad", "target_categorical", min_count=10),
                Feature("site", "context_categorical", dtype="int64"),
                Feature("title", "target_tokens"),
                Feature("hist", "history", min_count=1000)]
    examples = [
        _example(10, ad="a", site=7, title=["red", "shoe", "red"], hist=["x"]),
        _example(5, ad="b", site=7, title=["shoe"], hist=["x"]),
        _example(6, ad="b", site=3, title=["blue"], hist=[]),
        _example(9, ad="c", site=12, title=["blue", "hat"], hist=["y"]),
    ]
    with BeamTestPipeline() as p:
        vocab = p | beam.Create(examples) | ComputeVocabularies(features)
        assert_that(vocab, equal_to([
            ("ad", ["b", "a"]),                        # b: 11, a: 10, c: 9 < 10 -> OOV
            ("site", [7, 12, 3]),                      # 15, 9, 6
            ("title", ["blue", "shoe", "red", "hat"]),  # 15, 15 (tie by value), 10, 9
            ("hist", []),                              # nothing reaches 1000
        ]))


def test_order_vocabulary():
    counts = [("b", 3), ("a", 3), ("c", 7), ("d", 1)]
    assert order_vocabulary(counts, min_count=1) == ["c", "a", "b", "d"]
    assert order_vocabulary(counts, min_count=3) == ["c", "a", "b"]
    assert order_vocabulary([(10, 2), (9, 2)], min_count=2) == [9, 10]
