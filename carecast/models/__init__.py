"""dbt-like SQL models: discovery, rendering of ref/source/var, and running them over the lake."""
