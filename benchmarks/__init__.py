"""On-demand benchmarks for stageflow (not tests); see benchmarks/README.md.

A package so that pipeline files can name ``benchmarks.stages:Pass`` from the repo root.
"""
