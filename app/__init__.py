"""Streamlit UI for the retrieval comparison."""
