"""Analyst and model SQL: parsing, column lineage, and a confined DuckDB engine."""
