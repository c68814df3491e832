"""Milvus collections of backbone features: build, search, evaluate."""
