"""The audit trail: one record per tokenize, detokenize, delete, erase and denial."""
