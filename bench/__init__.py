"""`make bench`: the API's speed, measured on the production-shaped local stack (see run.py).

Not a test package: pytest does not collect it (no test_*.py, and `bench` is in norecursedirs).
"""
