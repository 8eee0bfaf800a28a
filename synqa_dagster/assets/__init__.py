"""Thin Dagster assets, one module per funnel stage: load, call the pure logic, write, report."""
