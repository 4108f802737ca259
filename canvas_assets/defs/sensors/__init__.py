"""Sensors. Each stays thin; its decisions are pure functions beside it, tested directly."""
