"""Metric extraction and windowed aggregation, on whole batches."""
