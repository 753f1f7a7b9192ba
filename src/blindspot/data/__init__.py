"""NLI data: examples, loaders (MNLI, HANS, any NLI file or hub split), cleaning and sampling.

    python -c "from blindspot.data import load_source; print(load_source('../shared/data/mnli-subset/multinli_1.0_dev_matched.jsonl.gz').label_counts())"
"""

from blindspot.data.cleaning import clean_mnli, sample_balanced, sample_examples, split_validation, stratified_sample
from blindspot.data.example import (HANS_LABELS, MNLI_LABELS, NLIExample, NLISet, load_examples, save_examples,
                                    to_two_way)
from blindspot.data.generic import load_nli
from blindspot.data.hans import load_hans, load_hans_hub
from blindspot.data.mnli import load_mnli, load_mnli_hub
from blindspot.data.sources import DataSource, load_source, parse_source

__all__ = [
    "DataSource", "HANS_LABELS", "MNLI_LABELS", "NLIExample", "NLISet", "clean_mnli", "load_examples",
    "load_hans", "load_hans_hub", "load_mnli", "load_mnli_hub", "load_nli", "load_source", "parse_source",
    "sample_balanced", "sample_examples", "save_examples", "split_validation", "stratified_sample", "to_two_way",
]
