"""The sample stage: problems in, candidate codes and tests per problem out (the `samples` artifact).

`replay.py` imports samples that were generated elsewhere (our JSONL, or CodeT / evalplus style);
`candidates.py` holds the text processing every source shares (normalisation, CodeT assert
extraction, de-duplication by content hash); `generate.py` and `stage.py` sample new ones from a
model through `components/llm/` (the model client every stage stands on).
"""

from codedpo.components.sample.replay import ImportResult, Skipped, import_samples, read_samples, write_samples

__all__ = ["ImportResult", "Skipped", "import_samples", "read_samples", "write_samples"]
