"""Measurements of a live network and the reports made from them."""
