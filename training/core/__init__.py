"""The torch-free serving core, imported by both the gateway and the offline code.

- `contract`: the data contract (events, customers, impressions) and its row-level validation;
- `sessionize`: events -> sessions (30-minute inactivity rule);
- `featurizer`: sessions -> the encoder's integer/float arrays (numpy only, one copy for training and serving);
- `ranker`: the served tile ranker (`ranker.json`) and the recency pooling of a customer's sessions;
- `manifest`: the model manifest that ties featurizer, encoder, intent head, taxonomy and ranker together.

Only numpy, pydantic and the standard library: never torch, sklearn or the LLM runtime (import-linter
contracts in `make test` enforce it).
"""
