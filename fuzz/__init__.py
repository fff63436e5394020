"""Fuzzing for the shared parser and the drain intake: strategies, properties and a runner.

The properties here run twice: a few hundred examples each in the normal test run
(tests/test_fuzz.py, tests/server/test_fuzz_intake.py), and as a long campaign with
``python -m fuzz --seconds S`` or ``--examples N``.
"""
