"""File pipelines: tokenize (or reveal) the sensitive values of CSV, JSON Lines, fixed-width and
Mastercard IPM files, read from disk, S3 or SFTP, through the gateway's vault.

``spec`` reads a pipeline spec; ``csvfile``, ``jsonlines``, ``fixedwidth`` and ``ipm`` split
each format into records and back; ``detectors`` finds values in free text; ``transform`` is the
per-partition function of rows in and rows out; ``runner`` drives sources, workers, progress
and the report; ``infer`` proposes a spec for a sample.
"""
