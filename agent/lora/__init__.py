"""Opt-in LoRA consolidation: per-user adapters, the learn run and its records, and the question sets it trains and tests on."""
